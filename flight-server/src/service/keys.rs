//! The key listings: GetPrimaryKeys, GetExportedKeys, GetImportedKeys and
//! GetCrossReference, answered from [`crate::keys`] for the products the
//! principal may see.

use arrow_flight::Ticket;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{
    CommandGetCrossReference, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
};
use tonic::{Request, Response, Status};

use super::AgoraFlightSqlService;
use crate::keys;
use crate::metadata::{foreign_keys_schema, primary_keys_schema};

impl AgoraFlightSqlService {
    /// The keys products declare (contract or PostgreSQL), for the products
    /// the principal may see (see [`Session::primary_key`]): `table` names a
    /// product, in `db_schema` (a domain) when given, else in every domain.
    pub(super) async fn primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetPrimaryKeys").await?;
        let session = self.session(&request);
        let products =
            keys::products_named(&session, query.catalog.as_deref(), query.db_schema.as_deref(), &query.table);
        let batch = keys::primary_keys(&session, &products).await?;
        Ok(self.batch_stream(primary_keys_schema(), batch))
    }

    /// The foreign keys that reference the named product (PostgreSQL's).
    pub(super) async fn exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let named = (query.catalog, query.db_schema, query.table);
        self.foreign_keys_of(request, "DoGet GetExportedKeys", named, keys::Side::Referenced).await
    }

    /// The foreign keys the named product holds (PostgreSQL's).
    pub(super) async fn imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let named = (query.catalog, query.db_schema, query.table);
        self.foreign_keys_of(request, "DoGet GetImportedKeys", named, keys::Side::Referencing).await
    }

    /// The foreign keys on `side` of the products named `(catalog, db_schema, table)`.
    async fn foreign_keys_of(
        &self,
        request: Request<Ticket>,
        action: &str,
        (catalog, db_schema, table): (Option<String>, Option<String>, String),
        side: keys::Side,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, action).await?;
        let session = self.session(&request);
        let products = keys::products_named(&session, catalog.as_deref(), db_schema.as_deref(), &table);
        let found = keys::foreign_keys(&session, &products, side).await;
        Ok(self.batch_stream(foreign_keys_schema(), keys::foreign_keys_batch(&found)?))
    }

    /// The foreign keys from the `fk_*` product to the `pk_*` product.
    pub(super) async fn cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetCrossReference").await?;
        let session = self.session(&request);
        let referenced =
            keys::products_named(&session, query.pk_catalog.as_deref(), query.pk_db_schema.as_deref(), &query.pk_table);
        let referencing =
            keys::products_named(&session, query.fk_catalog.as_deref(), query.fk_db_schema.as_deref(), &query.fk_table);
        let mut found = keys::foreign_keys(&session, &referenced, keys::Side::Referenced).await;
        found.retain(|k| referencing.contains(&k.fk_product));
        Ok(self.batch_stream(foreign_keys_schema(), keys::foreign_keys_batch(&found)?))
    }
}
