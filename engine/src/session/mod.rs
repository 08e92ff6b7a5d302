//! What one session sees of the mesh: the `mesh` catalog narrowed to the
//! principal's products and columns (each governed product wrapped with its
//! policies), and the `information_schema` over it. Every SQL path resolves
//! names through here.

pub(crate) mod catalog;
pub(crate) mod information_schema;

pub(crate) use self::catalog::SessionCatalog;
