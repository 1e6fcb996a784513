//! Why a host function did not do what the guest asked: the one error type of the state methods
//! behind the ABI glue. The glue (`imports.rs`, `hostcall`) is the one place that turns a fault
//! into what the guest sees: a `proxy_result_t` status, a trap, or (over budget) what the
//! profile's host does ([`crate::Profile::over_budget`]).

use super::OverBudget;
use crate::abi::Status;
use crate::memory::MemoryError;

/// How a host function ends when it does not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Return this status to the guest (NOT_FOUND, BAD_ARGUMENT, ...).
    Status(Status),
    /// Trap the guest: the host refuses to continue this call.
    Trap(String),
    /// The host-memory budget cannot hold what the call asked to keep: the profile decides.
    OverBudget(OverBudget),
}

impl Fault {
    /// `Ok(())` for `Status::Ok`, else the status as a fault (for the shared-state methods that
    /// answer a status).
    pub fn check(status: Status) -> Result<(), Fault> {
        match status {
            Status::Ok => Ok(()),
            other => Err(Fault::Status(other)),
        }
    }
}

impl From<Status> for Fault {
    fn from(status: Status) -> Self {
        Fault::Status(status)
    }
}

impl From<OverBudget> for Fault {
    fn from(refusal: OverBudget) -> Self {
        Fault::OverBudget(refusal)
    }
}

impl From<MemoryError> for Fault {
    fn from(e: MemoryError) -> Self {
        match e {
            // The guest's own allocator trapped: propagate the trap rather than hide it.
            MemoryError::AllocatorTrapped(msg) => Fault::Trap(format!("guest allocator trapped: {msg}")),
            // Spec: INVALID_MEMORY_ACCESS for a pointer or length the host cannot use.
            _ => Fault::Status(Status::InvalidMemoryAccess),
        }
    }
}
