//! A shared-data page of any bytes (written by another version, another plugin under the same
//! key, or corrupted), under the limiter: a value of another layout is never read (the decision
//! is the one on an empty page); a value of this layout decodes field by field and re-encodes to
//! the same bytes; whatever the counters hold, a client is never admitted over its limit at one
//! instant; and every page written is one of this layout.
//!
//! Input: a mode byte (bit 0: give the bytes this layout's header, so the fuzzer reaches the
//! decoder; bits 1-2: which client), then the value's bytes.
#![no_main]

use std::sync::OnceLock;

use envoy_ratelimit_wasm::internals::{Limit, Limiter, PageLayout, Verdict};
use libfuzzer_sys::fuzz_target;

const LEVELS: [u64; 2] = [5, 70_000];
const NOW: u64 = 1_700_000_000_000;

fn limiter() -> &'static Limiter {
    static LIMITER: OnceLock<Limiter> = OnceLock::new();
    LIMITER.get_or_init(|| {
        let limits = [
            Limit {
                window_ms: 1_000,
                requests: vec![LEVELS[0]],
                ..Limit::default()
            },
            Limit {
                window_ms: 60_000,
                requests: vec![LEVELS[1]],
                ..Limit::default()
            },
        ];
        Limiter::new(&limits, 4, 2)
    })
}

/// Decodes every field of every slot and the summary, and writes each back into a copy.
fn reencoded(layout: &PageLayout, page: &[u8]) -> Vec<u8> {
    let mut copy = page.to_vec();
    layout.set_clock_ms(&mut copy, layout.clock_ms(page));
    for slot in 0..layout.slots() {
        let (identity, last) = (layout.identity(page, slot), layout.last_ms(page, slot));
        layout.set_header(&mut copy, slot, identity, last);
        layout.set_seeded(
            &mut copy,
            slot,
            layout.seeded_ms(page, slot),
            layout.door(page, slot),
        );
        for limit in 0..LEVELS.len() {
            let ring = layout.read_ring(page, slot, limit);
            layout.write_ring(&mut copy, slot, limit, &ring);
            layout.set_inherited(&mut copy, slot, limit, layout.inherited(page, slot, limit));
        }
    }
    for limit in 0..LEVELS.len() {
        for half in 0..2 {
            for cell in 0..layout.cells(limit) {
                let value = layout.cell(page, limit, half, cell);
                layout.set_cell(&mut copy, limit, half, cell, value);
            }
        }
    }
    copy
}

/// Charges `client` seven times at one instant; how many were admitted, and the page after.
fn hammer(limiter: &Limiter, mut page: Vec<u8>, client: u64) -> (usize, Vec<u8>) {
    let mut admitted = 0;
    for _ in 0..7 {
        let (write, charged) = limiter.charge(&mut page, client, 1, &LEVELS, NOW);
        if charged.verdict == Verdict::Admitted {
            admitted += 1;
            assert!(write, "an admission not written");
        }
        if write {
            assert!(
                limiter.layout().recognises(&page),
                "wrote a page of another layout"
            );
        }
    }
    (admitted, page)
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&mode, rest)) = bytes.split_first() else {
        return;
    };
    let limiter = limiter();
    let layout = limiter.layout();
    let page = if mode & 1 == 1 {
        let mut page = layout.empty_page();
        let body = &mut page[8..];
        let n = body.len().min(rest.len());
        body[..n].copy_from_slice(&rest[..n]);
        page
    } else {
        rest.to_vec()
    };
    let client = [1u64, 2, 0xdead_beef, u64::MAX][(mode as usize >> 1) & 3];
    let recognised = layout.recognises(&page);
    if recognised {
        // Bits 2-7 of a slot's door byte are not part of the layout: never read, written as 0.
        let mut expected = page.clone();
        for slot in 0..layout.slots() {
            let door = layout.door(&page, slot);
            layout.set_seeded(&mut expected, slot, layout.seeded_ms(&page, slot), door);
        }
        assert_eq!(
            reencoded(layout, &page),
            expected,
            "a decoded page re-encodes differently"
        );
    }
    let (admitted, _) = hammer(limiter, page, client);
    assert!(
        admitted as u64 <= LEVELS[0],
        "{admitted} admitted at one instant, limit {}",
        LEVELS[0]
    );
    if !recognised {
        let (fresh, _) = hammer(limiter, layout.empty_page(), client);
        assert_eq!(admitted, fresh, "a value of another layout was read");
    }
});
