//! Transaction bytes read back from disk: a segment's aborted-transaction index, a control
//! batch, and a `__transaction_state` record, as a crash or a damaged volume may leave them.
//!
//! Decoding must never panic; an index the decoder accepts encodes back to its whole
//! entries, and a transaction state it accepts survives an encode and decode unchanged.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strata_node::log::batch::parse_header;
use strata_node::log::txn::{decode_index, read_marker, ENTRY_LEN};
use strata_node::txn::records::{decode_key, TxnMeta};

#[global_allocator]
static ALLOC: strata_node::alloc::LazyLargeAlloc = strata_node::alloc::LazyLargeAlloc;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = decode_index(data) {
        let whole = data.len() / ENTRY_LEN * ENTRY_LEN;
        let again: Vec<u8> = entries.iter().flat_map(|e| e.encode()).collect();
        assert_eq!(again, &data[..whole]);
    }
    if let Ok(Some(h)) = parse_header(data) {
        if h.total_len() <= data.len() {
            let _ = read_marker(&h, data);
        }
    }
    let raw = Bytes::copy_from_slice(data);
    let _ = decode_key(raw.clone());
    if let Ok(m) = TxnMeta::decode(raw) {
        assert_eq!(TxnMeta::decode(m.encode()).expect("re-decodes"), m);
    }
});
