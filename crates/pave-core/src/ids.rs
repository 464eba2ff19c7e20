//! Identifiers. UUIDv7 strings sort by creation time, which lets list endpoints
//! paginate by id without a separate sequence column.

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A new random secret of 32 bytes, hex encoded, prefixed so that it is
/// recognisable in a leaked log (`pave_…`).
pub fn new_secret_token() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("pave_{}{}", a.simple(), b.simple())
}
