//! The VM's contexts as the proxy-wasm ABI names them (spec ABI 0.2.1: `proxy_on_context_create`
//! with a root context id of 0 creates a root context, any other id an HTTP context of that
//! root), and which context each HTTP call's reply belongs to. Plain Rust, generic over what a
//! root and a stream context hold, using no other module: the glue (`filter`, wasm32 only) keeps
//! one [`ContextTable`] and looks every callback's context up in it.
//!
//! A reply goes to the context whose callback dispatched the call
//! ([`Calls::register`], [`ContextTable::take_call`]): the root's producer and
//! schema-registry lookups are dispatched from root callbacks (ticks), a synchronous request's
//! calls from its own. Hosts cancel a stream's calls when they destroy it (Envoy: pending calls
//! are cancelled with their context; ngx_wasm_module ties a dispatch to its request), so deleting
//! a stream forgets its calls still in flight: no reply is left waiting for a context that is
//! gone, and the map stays as small as the calls in flight.
//!
//! Lookups are by id in hash maps with a multiplicative hash ([`IdHasher`]): host-assigned ids
//! are not chosen by a client, and SipHash would cost more than the rest of a lookup.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes a `u32` id by one multiplication (Fibonacci hashing), spreading consecutive ids over
/// the high bits the map's control bytes use as well as the low bits its buckets use.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u32` keys are hashed here; any other input still hashes deterministically.
        for &b in bytes {
            self.write_u32(u32::from(b) ^ (self.0 as u32));
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = (u64::from(id) ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by context id or call token.
pub type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// One context with the number of its calls in flight.
#[derive(Debug)]
struct Entry<C> {
    context: C,
    /// Calls registered from this context and not yet answered.
    calls: u32,
}

/// One HTTP context and its root's id.
#[derive(Debug)]
struct Stream<S> {
    root: u32,
    entry: Entry<S>,
}

/// Why [`ContextTable::create`] created nothing (a host error: both are contract violations the
/// proxy-wasm Rust SDK answered with a panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateError {
    /// The id is already a live context.
    Duplicate,
    /// The stream's root context is not a live root context.
    UnknownRoot,
}

/// A live context, as a callback finds it.
#[derive(Debug)]
pub enum Context<'t, R, S> {
    /// A root context.
    Root(&'t mut R),
    /// An HTTP context.
    Stream(&'t mut S),
}

/// A context that [`ContextTable::delete`] removed.
#[derive(Debug)]
pub enum Removed<R, S> {
    /// A root context.
    Root(R),
    /// An HTTP context.
    Stream(S),
}

/// Registers the calls a context's callback dispatches, so their replies come back to it.
#[derive(Debug)]
pub struct Calls<'t> {
    context: u32,
    in_flight: &'t mut u32,
    tokens: &'t mut IdMap<u32>,
}

impl Calls<'_> {
    /// The context the calls are registered for.
    pub fn context(&self) -> u32 {
        self.context
    }

    /// Registers the call `token` for this context. A token the host hands out again while its
    /// first call is still registered (a host error) moves to this context; the earlier context
    /// is returned, and its count of calls in flight is corrected by [`ContextTable::take_call`]
    /// never finding that token for it (it is forgotten with the context).
    pub fn register(&mut self, token: u32) -> Option<u32> {
        *self.in_flight = self.in_flight.saturating_add(1);
        self.tokens.insert(token, self.context)
    }
}

/// Every live context of the VM and the calls in flight (see the module doc).
#[derive(Debug)]
pub struct ContextTable<R, S> {
    /// Root contexts: a handful per VM (one per plugin configuration sharing the VM), so a list.
    roots: Vec<(u32, Entry<R>)>,
    streams: IdMap<Stream<S>>,
    /// Call token → the id of the context that dispatched it.
    tokens: IdMap<u32>,
}

impl<R, S> Default for ContextTable<R, S> {
    fn default() -> Self {
        ContextTable {
            roots: Vec::new(),
            streams: IdMap::default(),
            tokens: IdMap::default(),
        }
    }
}

impl<R, S> ContextTable<R, S> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// `proxy_on_context_create(id, root_id)`: a root context made by `new_root` when `root_id`
    /// is 0, otherwise a stream made by `new_stream` from its root.
    pub fn create(
        &mut self,
        id: u32,
        root_id: u32,
        new_root: impl FnOnce(u32) -> R,
        new_stream: impl FnOnce(&R) -> S,
    ) -> Result<(), CreateError> {
        if self.contains(id) {
            return Err(CreateError::Duplicate);
        }
        if root_id == 0 {
            self.roots.push((
                id,
                Entry {
                    context: new_root(id),
                    calls: 0,
                },
            ));
            return Ok(());
        }
        let root = self.root(root_id).ok_or(CreateError::UnknownRoot)?;
        let context = new_stream(root);
        self.streams.insert(
            id,
            Stream {
                root: root_id,
                entry: Entry { context, calls: 0 },
            },
        );
        Ok(())
    }

    /// Whether `id` is a live context.
    pub fn contains(&self, id: u32) -> bool {
        self.streams.contains_key(&id) || self.roots.iter().any(|(r, _)| *r == id)
    }

    /// Root context `id`.
    pub fn root(&self, id: u32) -> Option<&R> {
        self.roots.iter().find(|(r, _)| *r == id).map(|(_, e)| &e.context)
    }

    /// The root context of stream `id`.
    pub fn root_of(&self, id: u32) -> Option<u32> {
        self.streams.get(&id).map(|s| s.root)
    }

    /// Context `id` (a stream or a root), with the registrar of the calls its callback
    /// dispatches.
    pub fn get(&mut self, id: u32) -> Option<(Context<'_, R, S>, Calls<'_>)> {
        let (context, in_flight) = match self.streams.get_mut(&id) {
            Some(stream) => (Context::Stream(&mut stream.entry.context), &mut stream.entry.calls),
            None => {
                let (_, entry) = self.roots.iter_mut().find(|(r, _)| *r == id)?;
                (Context::Root(&mut entry.context), &mut entry.calls)
            }
        };
        let calls = Calls {
            context: id,
            in_flight,
            tokens: &mut self.tokens,
        };
        Some((context, calls))
    }

    /// Stream `id` with its call registrar; `None` when `id` is no stream.
    pub fn stream(&mut self, id: u32) -> Option<(&mut S, Calls<'_>)> {
        match self.get(id)? {
            (Context::Stream(stream), calls) => Some((stream, calls)),
            (Context::Root(_), _) => None,
        }
    }

    /// Root context `id` with its call registrar; `None` when `id` is no root context.
    pub fn root_mut(&mut self, id: u32) -> Option<(&mut R, Calls<'_>)> {
        match self.get(id)? {
            (Context::Root(root), calls) => Some((root, calls)),
            (Context::Stream(_), _) => None,
        }
    }

    /// The reply to call `token` arrived: the context that dispatched it, which no longer waits
    /// for it; `None` for a token that was never registered or whose context was deleted.
    pub fn take_call(&mut self, token: u32) -> Option<u32> {
        let context = self.tokens.remove(&token)?;
        let in_flight = match self.streams.get_mut(&context) {
            Some(stream) => Some(&mut stream.entry.calls),
            None => self
                .roots
                .iter_mut()
                .find(|(r, _)| *r == context)
                .map(|(_, e)| &mut e.calls),
        };
        if let Some(n) = in_flight {
            *n = n.saturating_sub(1);
        }
        Some(context)
    }

    /// `proxy_on_delete(id)`: removes the context and forgets its calls still in flight.
    pub fn delete(&mut self, id: u32) -> Option<Removed<R, S>> {
        let (removed, in_flight) = match self.streams.remove(&id) {
            Some(stream) => (Removed::Stream(stream.entry.context), stream.entry.calls),
            None => {
                let at = self.roots.iter().position(|(r, _)| *r == id)?;
                let (_, entry) = self.roots.swap_remove(at);
                (Removed::Root(entry.context), entry.calls)
            }
        };
        if in_flight > 0 {
            self.tokens.retain(|_, context| *context != id);
        }
        Some(removed)
    }

    /// How many calls are registered and unanswered, in all contexts.
    pub fn calls_in_flight(&self) -> usize {
        self.tokens.len()
    }

    /// How many stream contexts are live.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Table = ContextTable<String, (u32, String)>;

    fn table() -> Table {
        let mut t = Table::new();
        t.create(1, 0, |id| format!("root{id}"), |_| unreachable!()).unwrap();
        t
    }

    fn stream(t: &mut Table, id: u32, root: u32) -> Result<(), CreateError> {
        t.create(id, root, |_| unreachable!(), |r| (id, r.clone()))
    }

    #[test]
    fn roots_and_streams_by_id() {
        let mut t = table();
        stream(&mut t, 2, 1).unwrap();
        t.create(7, 0, |id| format!("root{id}"), |_| unreachable!()).unwrap();
        stream(&mut t, 8, 7).unwrap();
        assert!(matches!(t.get(2), Some((Context::Stream((2, r)), _)) if r == "root1"));
        assert!(matches!(t.get(8), Some((Context::Stream((8, r)), _)) if r == "root7"));
        assert!(matches!(t.get(7), Some((Context::Root(r), _)) if r == "root7"));
        assert!(t.get(3).is_none());
        assert!(t.stream(1).is_none() && t.root_mut(2).is_none());
        assert_eq!(t.stream(2).unwrap().0 .0, 2);
        assert_eq!(t.root_mut(1).unwrap().0, "root1");
        assert_eq!((t.root_of(8), t.root_of(7), t.root_of(3)), (Some(7), None, None));
        assert_eq!(t.streams(), 2);
        // The host's contract broken: nothing created, nothing replaced.
        assert_eq!(stream(&mut t, 2, 1), Err(CreateError::Duplicate));
        assert_eq!(stream(&mut t, 1, 7), Err(CreateError::Duplicate));
        assert_eq!(
            t.create(2, 0, |_| "again".into(), |_| unreachable!()),
            Err(CreateError::Duplicate)
        );
        assert_eq!(stream(&mut t, 3, 99), Err(CreateError::UnknownRoot));
        assert_eq!(
            stream(&mut t, 3, 2),
            Err(CreateError::UnknownRoot),
            "a stream is no root"
        );
        assert!(!t.contains(3));
        // Deleted: gone, and its id may come back.
        assert!(matches!(t.delete(2), Some(Removed::Stream((2, _)))));
        assert!(matches!(t.delete(7), Some(Removed::Root(r)) if r == "root7"));
        assert!(t.delete(2).is_none() && t.get(2).is_none());
        assert!(matches!(t.get(8), Some((Context::Stream((8, r)), _)) if r == "root7"));
        assert_eq!(stream(&mut t, 9, 7), Err(CreateError::UnknownRoot));
        stream(&mut t, 2, 1).unwrap();
    }

    #[test]
    fn a_reply_goes_to_the_context_that_dispatched_the_call() {
        let mut t = table();
        stream(&mut t, 2, 1).unwrap();
        stream(&mut t, 3, 1).unwrap();
        {
            let (_, mut calls) = t.get(2).unwrap();
            assert_eq!(calls.context(), 2);
            assert_eq!(calls.register(10), None);
            assert_eq!(calls.register(11), None);
        }
        t.get(1).unwrap().1.register(12);
        t.get(3).unwrap().1.register(13);
        assert_eq!(t.calls_in_flight(), 4);
        assert_eq!(t.take_call(11), Some(2));
        assert_eq!(t.take_call(12), Some(1));
        assert_eq!(t.take_call(12), None, "one reply per call");
        assert_eq!(t.take_call(99), None, "never registered");
        // Stream 2 is deleted with call 10 in flight: its reply has nowhere to go.
        t.delete(2);
        assert_eq!(t.take_call(10), None);
        assert_eq!(t.calls_in_flight(), 1);
        // A stream deleted with no call in flight leaves the others alone.
        stream(&mut t, 4, 1).unwrap();
        t.delete(4);
        assert_eq!(t.take_call(13), Some(3));
        assert_eq!(t.calls_in_flight(), 0);
        // A root's calls are forgotten with it too.
        t.get(1).unwrap().1.register(14);
        t.delete(1);
        assert_eq!((t.take_call(14), t.calls_in_flight()), (None, 0));
    }

    #[test]
    fn a_token_handed_out_twice_belongs_to_the_later_call() {
        let mut t = table();
        stream(&mut t, 2, 1).unwrap();
        stream(&mut t, 3, 1).unwrap();
        t.get(2).unwrap().1.register(5);
        assert_eq!(t.get(3).unwrap().1.register(5), Some(2));
        assert_eq!(t.take_call(5), Some(3));
        // Stream 2 still counts a call in flight; deleting it forgets nothing of stream 3's.
        t.get(3).unwrap().1.register(6);
        t.delete(2);
        assert_eq!(t.take_call(6), Some(3));
    }

    /// Many streams and calls at once (a busy VM), created and finished out of order.
    #[test]
    fn many_contexts_at_once() {
        let mut t = table();
        for id in 2..2_002 {
            stream(&mut t, id, 1).unwrap();
            t.get(id).unwrap().1.register(id * 10);
        }
        for id in (2..2_002).step_by(2).rev() {
            assert_eq!(t.take_call(id * 10), Some(id));
            t.delete(id);
        }
        assert_eq!((t.streams(), t.calls_in_flight()), (1_000, 1_000));
        for id in (3..2_002).step_by(2) {
            t.delete(id);
        }
        assert_eq!((t.streams(), t.calls_in_flight()), (0, 0));
    }

    #[test]
    fn the_hash_spreads_consecutive_ids() {
        let hash = |id: u32| {
            let mut h = IdHasher::default();
            h.write_u32(id);
            h.finish()
        };
        let top: std::collections::HashSet<u64> = (0..128).map(|id| hash(id) >> 57).collect();
        assert!(top.len() > 64, "{}", top.len());
        let low: std::collections::HashSet<u64> = (0..128).map(|id| hash(id) & 127).collect();
        assert_eq!(low.len(), 128);
        let mut bytes = IdHasher::default();
        bytes.write(&[1, 2, 3]);
        assert_ne!(bytes.finish(), 0);
    }
}
