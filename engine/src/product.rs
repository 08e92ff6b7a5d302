//! Names of data products.

use std::fmt;

/// The address of a data product: `domain.product`, its SQL name in catalog `mesh`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProductRef {
    /// The domain (SQL schema).
    pub domain: String,
    /// The product (SQL table).
    pub product: String,
}

impl ProductRef {
    /// Builds a reference from its two parts.
    pub fn new(domain: impl Into<String>, product: impl Into<String>) -> Self {
        ProductRef { domain: domain.into(), product: product.into() }
    }
}

impl fmt::Display for ProductRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.domain, self.product)
    }
}
