//! Federated computational governance: who may read what, in which form, and a
//! record of every read.
//!
//! - [`policy`]: the policy files and the decision for one principal and one
//!   product ([`PolicySet::access`]), reduced to a neutral [`TablePolicy`].
//! - [`subjects`]: who a policy names (users, services, groups), typed.
//! - [`masks`]: the mask catalogue, one canonical implementation each.
//! - `rewrite`: the single enforcement point, an analyzer rule that turns every
//!   scan of a governed product into filter-then-mask before optimisation.
//! - `plan_view`: what a viewer may see of a plan (which EXPLAIN forms), and
//!   which hand-built plans an embedder may run.

pub(crate) mod compile;
pub(crate) mod expressions;
pub mod masks;
pub(crate) mod plan_view;
pub mod policy;
pub(crate) mod rewrite;
pub mod subjects;
pub(crate) mod viewer;

pub use self::masks::Mask;
pub use self::policy::{Access, Denial, Grant, PolicySet, Restriction, TablePolicy, TagRule};
pub use self::rewrite::AppliedPolicy;
pub use self::subjects::Subjects;
pub(crate) use self::viewer::Viewer;
