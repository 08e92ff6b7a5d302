//! The server's description: GetSqlInfo (what Agora's SQL supports) and
//! GetXdbcTypeInfo (its types, as ODBC/JDBC name them), both fixed tables
//! from [`crate::metadata`].

use arrow_flight::Ticket;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{CommandGetSqlInfo, CommandGetXdbcTypeInfo};
use tonic::{Request, Response, Status};

use super::AgoraFlightSqlService;
use crate::metadata::{SQL_INFO, XDBC_TYPES};

impl AgoraFlightSqlService {
    /// GetSqlInfo: the requested entries of [`SQL_INFO`].
    pub(super) async fn sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetSqlInfo").await?;
        let builder = query.into_builder(&SQL_INFO);
        let schema = builder.schema();
        self.built(schema, builder.build())
    }

    /// GetXdbcTypeInfo: [`XDBC_TYPES`], of one type when asked.
    pub(super) async fn xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.audited(&request, "DoGet GetXdbcTypeInfo").await?;
        let builder = query.into_builder(&XDBC_TYPES);
        let schema = builder.schema();
        self.built(schema, builder.build())
    }
}
