//! The `store` part of the configuration: key prefix, capacity, page size, and what a request
//! gets when the store cannot decide.

use crate::config::{name_rule, valid_name, Errors, OnFailure, Report, StoreConfig};

pub const MAX_CLIENTS: u32 = 10_000_000;
pub const MAX_SLOTS_PER_PAGE: u32 = 256;
const MAX_CAS_ATTEMPTS: u32 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Shared-data keys and stat names start with it.
    pub key_prefix: String,
    pub max_clients: u64,
    pub slots_per_page: usize,
    pub cas_attempts: u32,
    pub on_full: OnFailure,
    pub on_contention: OnFailure,
}

impl StoreSettings {
    pub fn compile(store: &StoreConfig, errors: &mut Errors) -> Self {
        if !valid_name(&store.key_prefix) {
            errors.add("$.store.key_prefix", name_rule(&store.key_prefix));
        }
        let ranges = [
            ("max_clients", store.max_clients, MAX_CLIENTS),
            ("slots_per_page", store.slots_per_page, MAX_SLOTS_PER_PAGE),
            ("cas_attempts", store.cas_attempts, MAX_CAS_ATTEMPTS),
        ];
        for (field, value, max) in ranges {
            if value == 0 || value > max {
                let message = format!("must be between 1 and {max}, got {value}");
                errors.add(format!("$.store.{field}"), message);
            }
        }
        StoreSettings {
            key_prefix: store.key_prefix.clone(),
            max_clients: store.max_clients.clamp(1, MAX_CLIENTS) as u64,
            slots_per_page: store.slots_per_page.clamp(1, MAX_SLOTS_PER_PAGE) as usize,
            cas_attempts: store.cas_attempts.clamp(1, MAX_CAS_ATTEMPTS),
            on_full: store.on_full,
            on_contention: store.on_contention,
        }
    }
}
