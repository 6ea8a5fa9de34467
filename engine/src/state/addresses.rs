//! How a stored part names its payload in a checkpoint. The state holds a [`PayloadHandle`] (a
//! slot of the payload index, meaningless to another process); a checkpoint lists the payloads
//! with committed references in slot order, and a part names its payload by its position in
//! that list, which is the payload's slot once the list is loaded (version 3, docs/format.md
//! §11). Versions 1 and 2 named it by its 32-byte address, found in the loaded index.
//!
//! Serde gives a `Serialize` impl no context, so the encoding thread is lent each slot's
//! position, and a thread decoding an older version a way to find an address's handle, for the
//! time of one call ([`encoding`], [`decoding_addresses`]). Outside `encoding`, a stored part
//! does not encode: an error, never a wrong position.

use std::cell::RefCell;

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

use crate::payload::{ContentAddress, PayloadHandle};

/// Finds the handle of a payload by its address.
pub type HandleOf = Box<dyn Fn(&ContentAddress) -> Option<PayloadHandle>>;

/// A slot's position in a checkpoint's list of payloads, or this if it is not listed.
pub const UNLISTED: u32 = u32::MAX;

thread_local! {
    /// Each slot's position, while this thread encodes.
    static POSITIONS: RefCell<Option<Vec<u32>>> = const { RefCell::new(None) };
    /// How to find a handle, while this thread decodes a version that names addresses.
    static HANDLES: RefCell<Option<HandleOf>> = const { RefCell::new(None) };
}

/// Runs `encode` with each slot's position at hand (indexed by handle; [`UNLISTED`] for a slot
/// the checkpoint does not list); returns its result and the positions.
pub fn encoding<R>(positions: Vec<u32>, encode: impl FnOnce() -> R) -> (R, Vec<u32>) {
    /// Takes the positions back even if `encode` panics.
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            POSITIONS.with_borrow_mut(|lent| *lent = None);
        }
    }
    POSITIONS.with_borrow_mut(|lent| *lent = Some(positions));
    let restore = Restore;
    let result = encode();
    let positions = POSITIONS.with_borrow_mut(Option::take).unwrap_or_default();
    drop(restore);
    (result, positions)
}

/// Runs `decode` over a version that names payloads by address, with `handle_of` at hand.
pub fn decoding_addresses<R>(handle_of: HandleOf, decode: impl FnOnce() -> R) -> R {
    /// Takes the function back even if `decode` panics.
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            HANDLES.with_borrow_mut(|lent| *lent = None);
        }
    }
    HANDLES.with_borrow_mut(|lent| *lent = Some(handle_of));
    let _restore = Restore;
    decode()
}

/// The position of the payload `handle` names in the checkpoint being encoded; `None` if it is
/// not listed (a part holding a handle holds a committed reference, so its payload is).
pub fn position_of(handle: PayloadHandle) -> Option<u32> {
    with_positions(|positions| listed(positions, handle))
}

/// Runs `f` with each slot's position (none outside `encoding`), for a caller that encodes many
/// parts.
pub fn with_positions<R>(f: impl FnOnce(&[u32]) -> R) -> R {
    POSITIONS.with_borrow(|lent| f(lent.as_deref().unwrap_or(&[])))
}

/// The position of `handle` in `positions`, if it is listed.
pub fn listed(positions: &[u32], handle: PayloadHandle) -> Option<u32> {
    positions.get(handle.get() as usize).copied().filter(|&p| p != UNLISTED)
}

/// Whether payloads are named by address in what this thread decodes.
pub fn by_address() -> bool {
    HANDLES.with_borrow(Option::is_some)
}

/// The handle of the payload at `address`, while decoding a version that names addresses.
pub fn handle_of(address: &ContentAddress) -> Option<PayloadHandle> {
    HANDLES.with_borrow(|lent| lent.as_ref().and_then(|handle_of| handle_of(address)))
}

/// A stored part's payload as serde writes it: its position.
pub fn serialize<S: Serializer>(handle: &PayloadHandle, serializer: S) -> Result<S::Ok, S::Error> {
    match position_of(*handle) {
        Some(position) => serializer.serialize_u32(position),
        None => Err(S::Error::custom(format!("payload handle {} is not listed", handle.get()))),
    }
}

/// A stored part's payload as serde reads it: the handle of its position, or of its address in
/// an older version.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PayloadHandle, D::Error> {
    if !by_address() {
        return u32::deserialize(deserializer).map(PayloadHandle);
    }
    let address = ContentAddress::deserialize(deserializer)?;
    handle_of(&address).ok_or_else(|| {
        D::Error::custom(format!("payload {address} is not among the checkpoint's payloads"))
    })
}
