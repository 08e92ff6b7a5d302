//! Flight actions beyond statements: cancelling the query behind a
//! FlightInfo (`CancelFlightInfo`, and Flight SQL's older `CancelQuery`), the
//! session actions (`SetSessionOptions`, `GetSessionOptions`,
//! `CloseSession`), and the list of the actions served.

use agora_engine::EngineError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{ActionCancelQueryRequest, ActionCancelQueryResult};
use arrow_flight::{Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightInfo};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::AgoraFlightSqlService;
use super::errors::{clipped, status};
use crate::session_options::{SetSessionOptionsRequest, session_id};

impl AgoraFlightSqlService {
    /// `CancelFlightInfo` (a Flight action arrow-flight does not dispatch);
    /// any other unknown action is refused by name.
    pub(super) async fn action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        match request.get_ref().r#type.as_str() {
            "CancelFlightInfo" => {}
            "SetSessionOptions" | "GetSessionOptions" | "CloseSession" => return self.session_action(request).await,
            other => return Err(Status::unimplemented(format!("action {} is not supported", clipped(other)))),
        }
        let info = CancelFlightInfoRequest::decode(request.get_ref().body.clone())
            .ok()
            .and_then(|r| r.info)
            .ok_or_else(|| {
                Status::invalid_argument(
                    "CancelFlightInfo: the body is not a CancelFlightInfoRequest with a FlightInfo",
                )
            })?;
        self.cancel_flight_info(&request, "CancelFlightInfo", info).await?;
        let body = CancelFlightInfoResult::new(CancelStatus::Cancelled).encode_to_vec();
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::once(async move { Ok(result) }))))
    }

    /// The Flight actions served besides Flight SQL's own.
    pub(super) async fn custom_actions(&self) -> Option<Vec<Result<arrow_flight::ActionType, Status>>> {
        let action = |name: &str, description: &str| {
            Ok(arrow_flight::ActionType { r#type: name.into(), description: description.into() })
        };
        Some(vec![
            action("CancelFlightInfo", "Cancel the query a FlightInfo's ticket is streaming"),
            action("SetSessionOptions", "Set session options: schema (a domain), catalog (mesh)"),
            action("GetSessionOptions", "The session's options"),
            action("CloseSession", "Close the session"),
        ])
    }

    /// Flight SQL's older form of CancelFlightInfo (the FlightInfo serialized
    /// in `info`).
    pub(super) async fn cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let info = FlightInfo::decode(query.info)
            .map_err(|_| Status::invalid_argument("CancelQuery: `info` is not a serialized FlightInfo"))?;
        self.cancel_flight_info(&request, "CancelQuery", info).await?;
        // Its CancelResult numbers the outcomes as CancelStatus does
        // (CANCELLED = 1); arrow-flight does not export that enum.
        Ok(ActionCancelQueryResult { result: CancelStatus::Cancelled as i32 })
    }

    /// `SetSessionOptions`, `GetSessionOptions` and `CloseSession` (see
    /// [`crate::session_options`]), audited under their names.
    async fn session_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let action = request.get_ref().r#type.clone();
        self.audited(&request, &action).await?;
        let session = self.session(&request);
        let owner = session.principal().user.clone();
        let id = session_id(request.metadata());
        let mut cookie = None;
        let body = match action.as_str() {
            "SetSessionOptions" => {
                crate::session_options::refuse_anonymous(&owner)?;
                let options = SetSessionOptionsRequest::decode(request.get_ref().body.clone()).map_err(|_| {
                    Status::invalid_argument("SetSessionOptions: the body is not a SetSessionOptionsRequest")
                })?;
                let outcome = self.sessions.set(id.as_deref(), &owner, options, &session.schemas())?;
                cookie = outcome.opened.map(|id| format!("{}={id}", crate::session_options::COOKIE));
                outcome.result.encode_to_vec()
            }
            "GetSessionOptions" => self.sessions.get(id.as_deref(), &owner, &session.schemas()).encode_to_vec(),
            _ => {
                let closed = self.sessions.close(id.as_deref(), &owner)?;
                cookie = Some(format!("{}=; Max-Age=0", crate::session_options::COOKIE));
                closed.encode_to_vec()
            }
        };
        let result = arrow_flight::Result { body: body.into() };
        let mut response: Response<<Self as FlightService>::DoActionStream> =
            Response::new(Box::pin(futures::stream::once(async move { Ok(result) })));
        if let Some(cookie) = cookie {
            let value = MetadataValue::try_from(cookie)
                .map_err(|_| Status::internal("a session cookie is not a valid header value"))?;
            response.metadata_mut().insert("set-cookie", value);
        }
        Ok(response)
    }

    /// Cancels the queries streaming under `info`'s tickets through `CALL
    /// cancel_query` as the requesting principal (see [`crate::cancel`]).
    async fn cancel_flight_info(
        &self,
        request: &Request<Action>,
        action: &str,
        info: FlightInfo,
    ) -> Result<(), Status> {
        self.audited(request, action).await?;
        let ids: Vec<String> = info
            .endpoint
            .iter()
            .filter_map(|e| e.ticket.as_ref())
            .flat_map(|t| self.running.running(&t.ticket))
            .collect();
        let session = self.session(request);
        let mut cancelled = false;
        for id in ids {
            // The id is one the engine made (a UUID), never client text.
            match session.collect(&format!("CALL cancel_query('{id}')")).await {
                Ok(_) => cancelled = true,
                Err(EngineError::NotFound(_)) => {}
                Err(e) => return Err(status(e)),
            }
        }
        if cancelled { Ok(()) } else { Err(crate::cancel::nothing_running()) }
    }
}
