//! The Kafka REST proxy protocol: building the produce request for one topic ([`request`]) and
//! reading the proxy's answer into an outcome, then into the client's answer ([`outcome`]).
//!
//! Both halves are pure; the proxy-wasm glue only moves their bytes to and from the host.

pub mod outcome;
pub mod request;

pub use outcome::{classify, ClientAnswer, Failure, Outcome, ReplyView};
pub use request::{build_request, RestRequest};
