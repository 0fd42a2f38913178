//! The fleet tier in the native module: this worker's requests that wait for the rate limit
//! service (the engine's [`Waitlist`], one per worker thread), its calls sent as gRPC unary
//! calls through Envoy's HTTP callout (`http_filter_http_callout`: an HTTP/2 POST to the
//! configured cluster, the message in a gRPC frame), and the answers read back in
//! `on_http_filter_http_callout_done`.
//!
//! A callout belongs to one stream: a call is sent from the stream of the request that leads it
//! (a side call from the stream whose decision asked for it), and its answer arrives in that
//! stream's hook. The requests that joined the call are decided there, on their behalf, through
//! their own stream's callbacks (same worker thread; a stream leaves the list when Envoy destroys
//! it), then resumed (`continue_decoding`) or answered. When a stream is destroyed with calls in
//! flight, Envoy drops them without an answer: they fail then, so nobody waits forever.
//!
//! Batched counting is refused at load: its reports are sent on a timer, and ABI 0.2.0's timers
//! are a stream's (`http_filter_scheduler`, gone with the stream) or the configuration's, which
//! does not run on the worker whose memory holds the hits to report (docs/src/config/fleet.md).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use super::abi::{self, EnvoyBuffer, EnvoyHeader, FilterPtr, ModuleBuffer, ModuleHeader};
use super::carry::{carry, now_ms};
use super::config::{store, with_worker, Config};
use super::view::{RequestRead, Stream};
use crate::engine::{
    side_answered, Call, CallHost, Decision, FleetVerdict, Headers, Progress, SideCall, Ticket,
    Waiting, Waitlist, FLEET_METHOD, FLEET_SERVICE,
};

/// What a waiting request keeps: its configuration and its stream (Envoy's pointer).
#[derive(Clone)]
pub struct Held {
    config: Arc<Config>,
    stream: usize,
}

thread_local! {
    /// This worker's requests waiting for the service, by stream.
    static WAITING: Waitlist<usize, Held> = Waitlist::default();
    /// Calls in flight: the waitlist's token by (stream, Envoy's callout id).
    static FLIGHTS: RefCell<HashMap<(usize, u64), u64>> = RefCell::new(HashMap::new());
    static NEXT_TOKEN: Cell<u64> = const { Cell::new(1) };
}

/// Parks a request that needs the service's word and sends the call it leads. `Some` when it
/// was decided at once and goes on (a call that could not be sent), `None` when it waits or
/// was answered.
pub fn park(stream: Stream, config: &Arc<Config>, waiting: Waiting) -> Option<(Headers, Ticket)> {
    let id = stream.filter as usize;
    let held = Held {
        config: config.clone(),
        stream: id,
    };
    let mut host = Host::new(stream, config, Some(id));
    WAITING.with(|list| {
        if list.park(id, held, waiting) {
            list.send(&mut host);
        }
    });
    match host.own {
        Some(true) => take_kept(stream.filter),
        _ => None,
    }
}

/// Sends lease refills nobody waits for, from the stream whose decision asked for them.
pub fn send_side_calls(stream: Stream, config: &Arc<Config>, calls: Vec<SideCall>) {
    if calls.is_empty() {
        return;
    }
    let held = Held {
        config: config.clone(),
        stream: stream.filter as usize,
    };
    let mut host = Host::new(stream, config, None);
    WAITING.with(|list| {
        for call in calls {
            list.side(call, held.clone());
        }
        list.send(&mut host);
    });
}

/// What was decided for the request of `stream` on its behalf, if it was resumed.
pub fn take_kept(stream: FilterPtr) -> Option<(Headers, Ticket)> {
    WAITING.with(|list| list.take_kept(stream as usize))
}

/// The service answered (or failed) callout `callout` of `stream`.
pub fn answered(stream: Stream, config: &Arc<Config>, callout: u64, verdict: FleetVerdict) {
    let key = (stream.filter as usize, callout);
    let Some(token) = FLIGHTS.with(|f| f.borrow_mut().remove(&key)) else {
        return;
    };
    let mut host = Host::new(stream, config, None);
    WAITING.with(|list| {
        list.answered(token, verdict, &mut host);
        list.send(&mut host);
    });
}

/// Envoy destroys the stream `id` (`config` its configuration): it leaves the list, and its
/// calls in flight, which Envoy drops, fail for whoever waits on them.
pub fn gone(id: usize, config: &Arc<Config>) {
    if config.filter.fleet_service().is_none() {
        return;
    }
    WAITING.with(|list| list.forget(id));
    let lost: Vec<u64> = FLIGHTS.with(|f| {
        let mut flights = f.borrow_mut();
        let keys: Vec<_> = flights.keys().filter(|k| k.0 == id).copied().collect();
        keys.iter().filter_map(|k| flights.remove(k)).collect()
    });
    let Some(envoy) = abi::envoy() else { return };
    for token in lost {
        let mut host = Host {
            envoy,
            current: None,
            deciding: None,
            own: None,
        };
        WAITING.with(|list| {
            list.answered(token, FleetVerdict::Failed, &mut host);
            list.send(&mut host);
        });
    }
}

/// The waitlist's host during one of Envoy's hooks on this worker.
struct Host<'a> {
    envoy: &'static abi::Callbacks,
    /// The stream of the running hook, with its configuration (side calls' stats go there).
    current: Option<(Stream, &'a Arc<Config>)>,
    /// The stream in its request-headers hook (it is not resumed: its hook's answer is).
    deciding: Option<usize>,
    /// Whether that stream was decided within its hook: `Some(true)` when it goes on.
    own: Option<bool>,
}

impl<'a> Host<'a> {
    fn new(stream: Stream, config: &'a Arc<Config>, deciding: Option<usize>) -> Self {
        Host {
            envoy: stream.envoy,
            current: Some((stream, config)),
            deciding,
            own: None,
        }
    }

    fn stream(&self, id: usize) -> Stream {
        Stream {
            filter: id as FilterPtr,
            envoy: self.envoy,
        }
    }
}

impl CallHost<usize, Held> for Host<'_> {
    fn send(&mut self, call: &Call<Held>) -> Option<u64> {
        let service = call.ctx.config.filter.fleet_service()?;
        let stream = self.stream(call.ctx.stream);
        let callout = callout(stream, &service.cluster, service.timeout_ms, &call.message)?;
        let token = NEXT_TOKEN.with(|n| n.replace(n.get() + 1));
        FLIGHTS.with(|f| f.borrow_mut().insert((call.ctx.stream, callout), token));
        Some(token)
    }

    fn resume(
        &mut self,
        id: usize,
        held: &Held,
        waiting: Waiting,
        verdict: FleetVerdict,
    ) -> Option<Progress> {
        let request = RequestRead::new(self.stream(id));
        let (filter, now) = (&held.config.filter, now_ms());
        let progress = with_worker(&held.config, |worker| {
            waiting.resume(filter, store(), &mut worker.memory, &request, verdict, now)
        });
        Some(progress)
    }

    fn side_answered(&mut self, held: &Held, side: &SideCall, verdict: FleetVerdict) {
        let (filter, now) = (&held.config.filter, now_ms());
        let events = with_worker(&held.config, |worker| {
            side_answered(filter, &mut worker.memory, side, verdict, now)
        });
        // Stats are counted through a live stream of the same configuration.
        if let Some((stream, config)) = self.current {
            if Arc::ptr_eq(config, &held.config) {
                config.record(stream, &events);
            }
        }
    }

    fn carry_out(&mut self, id: usize, held: &Held, mut decision: Decision) {
        WAITING.with(|list| {
            for side in std::mem::take(&mut decision.side_calls) {
                list.side(side, held.clone());
            }
        });
        let stream = self.stream(id);
        let goes_on = carry(&held.config, stream, decision, now_ms());
        if let Some((headers, ticket)) = goes_on.as_ref() {
            let (headers, ticket) = (headers.clone(), ticket.clone());
            WAITING.with(|list| list.keep(id, headers, ticket));
        }
        if self.deciding == Some(id) {
            self.own = Some(goes_on.is_some());
        } else if goes_on.is_some() {
            // SAFETY: `id` is a live stream of this worker (destroyed ones leave the list),
            // stopped in its request headers.
            unsafe { (self.envoy.http_filter_continue_decoding)(stream.filter) };
        }
    }
}

/// Sends `message` to the service as a gRPC unary call from `stream`; Envoy's callout id.
fn callout(stream: Stream, cluster: &str, timeout_ms: u64, message: &[u8]) -> Option<u64> {
    let path = format!("/{FLEET_SERVICE}/{FLEET_METHOD}");
    let pairs: [(&str, &str); 5] = [
        (":method", "POST"),
        (":path", &path),
        (":authority", cluster),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    let mut headers: Vec<ModuleHeader> = (pairs.iter())
        .map(|(k, v)| ModuleHeader {
            key_ptr: k.as_ptr(),
            key_length: k.len(),
            value_ptr: v.as_ptr(),
            value_length: v.len(),
        })
        .collect();
    let body = grpc_frame(message);
    let mut id = 0u64;
    let (count, cluster) = (headers.len(), ModuleBuffer::of(cluster.as_bytes()));
    // SAFETY: a live stream of this worker; every buffer outlives the call, which copies them.
    let result = unsafe {
        (stream.envoy.http_filter_http_callout)(
            stream.filter,
            &mut id,
            cluster,
            headers.as_mut_ptr(),
            count,
            ModuleBuffer::of(&body),
            timeout_ms,
        )
    };
    if result != abi::CALLOUT_SUCCESS {
        log::warn!("ratelimit: cannot call the rate limit service (callout result {result})");
        return None;
    }
    Some(id)
}

/// The service's verdict from a finished callout: Envoy's result, the answer's headers (a
/// callout's answer has no trailers: see `grpc_status`) and its body in slices.
///
/// # Safety
/// The pointers are the ones Envoy passed to the running `callout_done` hook.
pub unsafe fn verdict_of(
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) -> FleetVerdict {
    if result != abi::CALLOUT_SUCCESS || headers.is_null() {
        return FleetVerdict::Failed;
    }
    // SAFETY: per the caller's promise, Envoy's arrays of headers and slices for this hook.
    let (headers, slices) = unsafe {
        let slices = match body.is_null() {
            true => &[][..],
            false => std::slice::from_raw_parts(body, body_size),
        };
        (std::slice::from_raw_parts(headers, headers_size), slices)
    };
    let pairs: Vec<(&[u8], &[u8])> = (headers.iter())
        .map(|h| {
            // SAFETY: Envoy's header bytes, valid for this hook.
            unsafe {
                (
                    EnvoyBuffer {
                        ptr: h.key_ptr,
                        length: h.key_length,
                    }
                    .bytes(),
                    EnvoyBuffer {
                        ptr: h.value_ptr,
                        length: h.value_length,
                    }
                    .bytes(),
                )
            }
        })
        .collect();
    let mut bytes = Vec::new();
    for slice in slices {
        // SAFETY: Envoy's body slices, valid for this hook.
        bytes.extend_from_slice(unsafe { slice.bytes() });
    }
    let (status, message) = grpc_status(&pairs, &bytes);
    FleetVerdict::of(status, message)
}

/// `message` in a gRPC frame: no compression, its length (big-endian), the bytes.
pub fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// gRPC's UNKNOWN: an answer that is not a gRPC answer.
const UNKNOWN: u32 = 2;

/// The gRPC status of an answer and its message. Envoy hands a callout the answer's headers and
/// body, not its trailers: a `grpc-status` header (a trailers-only answer, as errors are) is read
/// as it is; without one, only an HTTP 200 `application/grpc` answer whose body is exactly one
/// uncompressed frame counts as OK (the rate limit service answers OK with a message, never a
/// message and an error). Anything else is UNKNOWN (the call failed).
pub fn grpc_status<'a>(headers: &[(&[u8], &[u8])], body: &'a [u8]) -> (u32, Option<&'a [u8]>) {
    let header = |name: &[u8]| {
        (headers.iter())
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    if let Some(status) = header(b"grpc-status") {
        let status = std::str::from_utf8(status)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        return match status {
            Some(0) => (0, unframe(body)),
            Some(status) => (status, None),
            None => (UNKNOWN, None),
        };
    }
    let grpc = header(b"content-type").is_some_and(|v| v.starts_with(b"application/grpc"));
    match (header(b":status"), grpc, unframe(body)) {
        (Some(b"200"), true, Some(message)) => (0, Some(message)),
        _ => (UNKNOWN, None),
    }
}

/// The message of a body that is exactly one uncompressed gRPC frame.
fn unframe(body: &[u8]) -> Option<&[u8]> {
    let (prefix, message) = (body.get(..5)?, &body[5..]);
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    (prefix[0] == 0 && length == message.len()).then_some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[(&[u8], &[u8])] = &[(b":status", b"200"), (b"content-type", b"application/grpc")];

    #[test]
    fn a_frame_carries_the_message_after_its_length() {
        assert_eq!(grpc_frame(b"abc"), vec![0, 0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(grpc_frame(b""), vec![0, 0, 0, 0, 0]);
    }

    #[test]
    fn an_ok_answer_gives_its_message_unframed() {
        let body = grpc_frame(b"\x08\x01");
        assert_eq!(grpc_status(OK, &body), (0, Some(&b"\x08\x01"[..])));
        let mut with_status = OK.to_vec();
        with_status.push((b"grpc-status", b"0"));
        assert_eq!(
            grpc_status(&with_status, &body),
            (0, Some(&b"\x08\x01"[..]))
        );
    }

    #[test]
    fn a_trailers_only_error_keeps_its_status() {
        let headers: &[(&[u8], &[u8])] = &[
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            (b"grpc-status", b"14"),
        ];
        assert_eq!(grpc_status(headers, b""), (14, None));
        let garbled: &[(&[u8], &[u8])] = &[(b"grpc-status", b"x")];
        assert_eq!(grpc_status(garbled, b""), (UNKNOWN, None));
    }

    #[test]
    fn what_is_not_one_whole_grpc_frame_fails() {
        let body = grpc_frame(b"\x08\x01");
        // An HTTP error (Envoy's own 503 or 504 when the service is down or late).
        let unavailable: &[(&[u8], &[u8])] =
            &[(b":status", b"503"), (b"content-type", b"text/plain")];
        assert_eq!(grpc_status(unavailable, &body), (UNKNOWN, None));
        // Not gRPC, a cut frame, a compressed frame, two frames.
        let plain: &[(&[u8], &[u8])] = &[(b":status", b"200")];
        assert_eq!(grpc_status(plain, &body), (UNKNOWN, None));
        assert_eq!(grpc_status(OK, &body[..body.len() - 1]), (UNKNOWN, None));
        let mut compressed = body.clone();
        compressed[0] = 1;
        assert_eq!(grpc_status(OK, &compressed), (UNKNOWN, None));
        let twice = [body.clone(), body].concat();
        assert_eq!(grpc_status(OK, &twice), (UNKNOWN, None));
        assert_eq!(grpc_status(OK, b""), (UNKNOWN, None));
    }

    #[test]
    fn the_verdict_follows_the_status() {
        assert_eq!(FleetVerdict::of(14, None), FleetVerdict::Failed);
        let (status, message) = grpc_status(OK, b"\x00\x00\x00\x00\x00");
        assert_eq!(status, 0);
        assert_eq!(message, Some(&b""[..]));
    }
}
