//! The Kafka REST proxy protocol: building the produce request for one topic, a batch or a health
//! probe ([`request`]), and reading the proxy's answer into an outcome (one per record for a
//! batch), then into the client's answer ([`outcome`]).
//!
//! Both halves are pure; the proxy-wasm glue only moves their bytes to and from the host.

pub mod outcome;
pub mod request;
pub mod schema;

pub use outcome::{classify, classify_batch, probe_failure, ClientAnswer, Failure, Outcome, ReplyView};
pub use request::{
    batch_call, batch_envelope_len, build_batch_request, build_probe_request, build_produce_call, build_request,
    encode_record, record_len, BatchBody, ProduceCall, RestRequest, BATCH_SEPARATOR_LEN,
};
