//! The host-memory budget of one VM: every byte host-sim holds on a guest's behalf (log lines,
//! body bytes and header pairs the guest added, pending callouts, shared data and queue items,
//! properties, metrics) is charged to it, and released when the host lets go of it.
//!
//! A [`Charge`] is the one handle through which bytes are accounted: it adds to its budget when
//! it grows and gives the bytes back when it shrinks or is dropped. Whatever holds data keeps the
//! charge for it next to the data, so every way the data goes away (a reply that answers a
//! callout, a stream that ends, a queue item dequeued by another VM, shared data overwritten)
//! releases exactly what was charged, with no release path to forget. The budget is an atomic
//! counter behind an `Arc` because shared data, queues and metrics outlive a callback and may be
//! released from another VM's thread.

use crate::limits::OverBudget;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bookkeeping bytes for one entry of a host collection (a pair, a log line, a queue item):
/// the two `Vec` headers a key and value occupy. Counted so that zero-length entries still cost
/// something, and a guest cannot grow the host without bound with empty values.
pub(crate) const ENTRY_OVERHEAD: usize = 2 * std::mem::size_of::<Vec<u8>>();

/// The budget for host-held bytes of one VM ([`crate::Limits::max_host_bytes`]).
#[derive(Debug)]
pub struct HostBudget {
    limit: usize,
    used: AtomicUsize,
}

impl HostBudget {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: usize) -> Arc<HostBudget> {
        Arc::new(HostBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes still available.
    pub fn available(&self) -> usize {
        self.limit.saturating_sub(self.used())
    }

    /// A new charge of `bytes` on this budget, or the refusal when they do not fit.
    pub(crate) fn charge(self: &Arc<Self>, bytes: usize) -> Result<Charge, OverBudget> {
        self.take(bytes)?;
        Ok(Charge {
            budget: Some(self.clone()),
            bytes,
        })
    }

    fn take(&self, bytes: usize) -> Result<(), OverBudget> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .map(|_| ())
            .map_err(|used| OverBudget {
                needed: bytes,
                available: self.limit.saturating_sub(used),
                limit: self.limit,
            })
    }

    fn give_back(&self, bytes: usize) {
        // Never below zero: each charge gives back only what it took.
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            Some(used.saturating_sub(bytes))
        });
    }
}

/// Bytes held on a budget; released when the charge shrinks or is dropped. Not `Clone`: a copy
/// of the data it covers (handed to the embedder) is not held by the host.
#[derive(Debug, Default)]
pub struct Charge {
    budget: Option<Arc<HostBudget>>,
    bytes: usize,
}

impl Charge {
    /// Bytes this charge holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Makes the charge `bytes` on `budget`. Growing may be refused, and then nothing changes;
    /// shrinking never is. A charge held on another budget (shared data last written by another
    /// VM) moves: the new bytes are charged to `budget` and the old ones given back.
    pub(crate) fn resize(&mut self, budget: &Arc<HostBudget>, bytes: usize) -> Result<(), OverBudget> {
        match &self.budget {
            Some(own) if Arc::ptr_eq(own, budget) => {
                if bytes > self.bytes {
                    own.take(bytes - self.bytes)?;
                } else {
                    own.give_back(self.bytes - bytes);
                }
                self.bytes = bytes;
            }
            _ => *self = budget.charge(bytes)?,
        }
        Ok(())
    }

    /// Grows the charge by `bytes` on the budget it is held on (an unbound charge has none: it
    /// is refused with nothing available).
    pub(crate) fn grow(&mut self, bytes: usize) -> Result<(), OverBudget> {
        match self.budget.clone() {
            Some(budget) => self.resize(&budget, self.bytes.saturating_add(bytes)),
            None => Err(OverBudget {
                needed: bytes,
                available: 0,
                limit: 0,
            }),
        }
    }

    /// Gives `bytes` back (at most what the charge holds).
    pub(crate) fn shrink(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        if let Some(budget) = &self.budget {
            budget.give_back(bytes);
        }
        self.bytes -= bytes;
    }

    /// Whether the charge is held on a budget (a default charge is not).
    pub(crate) fn is_bound(&self) -> bool {
        self.budget.is_some()
    }

    /// Gives every byte back.
    pub(crate) fn clear(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(self.bytes);
        }
        self.bytes = 0;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The guest's share of a buffer or map the host also fills: a request body or a header map
/// starts with what the host received, and only what the guest makes it grow beyond that is
/// charged. When the guest shrinks it, the host's share shrinks first (the bytes it removed were
/// the host's), so the charge is always `total - host share`, exactly.
#[derive(Debug, Default)]
pub(crate) struct GuestGrowth {
    host_share: usize,
    charge: Charge,
}

impl GuestGrowth {
    /// Back to `GuestGrowth::default()`, the charge given back; without touching the charge
    /// when it was never bound (the usual case: the guest grew nothing).
    pub fn recycle(&mut self) {
        if self.charge.is_bound() {
            *self = GuestGrowth::default();
        } else {
            self.host_share = 0;
        }
    }

    /// The size of the whole buffer or map as accounted.
    pub fn total(&self) -> usize {
        self.host_share + self.charge.bytes()
    }

    /// Bytes charged to the guest.
    #[cfg(test)]
    pub fn charged(&self) -> usize {
        self.charge.bytes()
    }

    /// The host replaced the contents with `size` bytes of its own: the guest's growth is gone.
    pub fn host_set(&mut self, size: usize) {
        self.host_share = size;
        self.charge.clear();
    }

    /// The host appended `size` bytes of its own.
    pub fn host_added(&mut self, size: usize) {
        self.host_share = self.host_share.saturating_add(size);
    }

    /// The guest is about to change the contents to `new_total` bytes: charge the growth beyond
    /// the host's share, or refuse and change nothing.
    pub fn guest_resize(&mut self, budget: &Arc<HostBudget>, new_total: usize) -> Result<(), OverBudget> {
        if new_total <= self.host_share {
            self.charge.clear();
            self.host_share = new_total;
            Ok(())
        } else {
            self.charge.resize(budget, new_total - self.host_share)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up_and_drop_releases() {
        let budget = HostBudget::new(100);
        let a = budget.charge(30).unwrap();
        let b = budget.charge(70).unwrap();
        assert_eq!(budget.used(), 100);
        assert_eq!(budget.available(), 0);
        drop(a);
        assert_eq!(budget.used(), 70);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_charge_that_does_not_fit_is_refused_and_takes_nothing() {
        let budget = HostBudget::new(100);
        let _held = budget.charge(60).unwrap();
        let refused = budget.charge(41).unwrap_err();
        assert_eq!(
            refused,
            OverBudget {
                needed: 41,
                available: 40,
                limit: 100
            }
        );
        assert_eq!(budget.used(), 60);
        assert!(budget.charge(usize::MAX).is_err(), "no overflow");
        assert_eq!(budget.used(), 60);
    }

    #[test]
    fn resize_grows_shrinks_and_a_refused_growth_changes_nothing() {
        let budget = HostBudget::new(100);
        let mut c = budget.charge(10).unwrap();
        c.resize(&budget, 50).unwrap();
        assert_eq!((c.bytes(), budget.used()), (50, 50));
        c.resize(&budget, 5).unwrap();
        assert_eq!((c.bytes(), budget.used()), (5, 5));
        assert!(c.resize(&budget, 101).is_err());
        assert_eq!((c.bytes(), budget.used()), (5, 5));
        c.grow(95).unwrap();
        assert!(c.grow(1).is_err());
        assert_eq!((c.bytes(), budget.used()), (100, 100));
        c.shrink(30);
        assert_eq!((c.bytes(), budget.used()), (70, 70));
        c.shrink(1000);
        assert_eq!((c.bytes(), budget.used()), (0, 0));
        c.grow(20).unwrap();
        c.clear();
        assert_eq!((c.bytes(), budget.used()), (0, 0));
    }

    #[test]
    fn resize_onto_another_budget_moves_the_bytes() {
        let first = HostBudget::new(100);
        let second = HostBudget::new(100);
        let mut c = first.charge(40).unwrap();
        c.resize(&second, 30).unwrap();
        assert_eq!((first.used(), second.used()), (0, 30));
        // Refused on the new budget: stays where it was.
        let _fill = second.charge(70).unwrap();
        let mut d = first.charge(20).unwrap();
        assert!(d.resize(&second, 1).is_err());
        assert_eq!((first.used(), d.bytes()), (20, 20));
        // An unbound (default) charge binds on its first resize; it cannot grow on nothing.
        let mut unbound = Charge::default();
        assert!(unbound.grow(1).is_err());
        unbound.resize(&first, 10).unwrap();
        assert_eq!(first.used(), 30);
    }

    #[test]
    fn guest_growth_charges_only_what_the_guest_added() {
        let budget = HostBudget::new(1000);
        let mut g = GuestGrowth::default();
        g.host_set(100);
        assert_eq!((g.total(), g.charged(), budget.used()), (100, 0, 0));
        g.guest_resize(&budget, 150).unwrap();
        assert_eq!((g.total(), g.charged(), budget.used()), (150, 50, 50));
        g.host_added(25);
        assert_eq!((g.total(), g.charged()), (175, 50));
        // The guest truncates below the host's share: the host's bytes go first.
        g.guest_resize(&budget, 40).unwrap();
        assert_eq!((g.total(), g.charged(), budget.used()), (40, 0, 0));
        g.guest_resize(&budget, 1040).unwrap();
        assert!(g.guest_resize(&budget, 1041).is_err());
        assert_eq!((g.total(), budget.used()), (1040, 1000));
        // The host replaces the contents: the guest's growth is released.
        g.host_set(7);
        assert_eq!((g.total(), g.charged(), budget.used()), (7, 0, 0));
        g.guest_resize(&budget, 17).unwrap();
        drop(g);
        assert_eq!(budget.used(), 0);
    }
}
