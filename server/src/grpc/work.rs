//! The `Work` service over [`Ops`].

use std::collections::VecDeque;

use receptor_proto::v1 as pb;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{BoxStream, caller_of, invalid, request_stream_status, until_shutdown, work_status};
use crate::ops::{Ops, go_duration};
use crate::work::{ExtraData, Outcome, UnitStatus, WorkEvent};

/// The `receptor.v1.Work` service.
#[derive(Debug, Clone)]
pub struct WorkService {
    ops: Ops,
    cancel: CancellationToken,
}

impl WorkService {
    /// The service over `ops`; its streams and uploads end when `cancel` fires.
    pub fn new(ops: Ops, cancel: CancellationToken) -> Self {
        Self { ops, cancel }
    }
}

pub(crate) fn required_unit(unit_id: &str) -> Result<(), Status> {
    if unit_id.is_empty() {
        Err(invalid("unit_id is required"))
    } else {
        Ok(())
    }
}

/// The submission a `Submit` header asks for, checked before anything is created.
pub(crate) fn submit_request(
    header: pb::SubmitHeader,
) -> Result<crate::work::SubmitRequest, Status> {
    if header.work_type.is_empty() {
        return Err(invalid("header.work_type is required"));
    }
    let ttl = match header.ttl {
        None => String::new(),
        Some(ttl) => std::time::Duration::try_from(ttl)
            .map(go_duration)
            .map_err(|_| invalid("header.ttl must not be negative"))?,
    };
    let mut params: std::collections::BTreeMap<String, String> =
        header.params.into_iter().collect();
    // Reserved as in a classic submit; the request's metadata is the usual carrier.
    let trace_parent = params.remove(crate::telemetry::TRACEPARENT);
    Ok(crate::work::SubmitRequest {
        node: if header.node.is_empty() {
            "localhost".to_owned()
        } else {
            header.node
        },
        work_type: header.work_type,
        params,
        tls_client: header.tls_client,
        ttl,
        sign_work: header.sign_work,
        signature: header.signature,
        trace_parent,
    })
}

/// Checks a `Results` request's fields.
pub(crate) fn check_results(request: &pb::ResultsRequest) -> Result<(), Status> {
    required_unit(&request.unit_id)?;
    if request.offset < 0 {
        return Err(invalid("offset must not be negative"));
    }
    Ok(())
}

/// A unit's status as the contract shows it.
fn work_unit(unit_id: &str, status: UnitStatus) -> pb::WorkUnit {
    let extra_data_json = match status.extra_data {
        ExtraData::Null => "null".to_owned(),
        ExtraData::Json(raw) => raw,
        ExtraData::UnknownWorkType => "\"Unknown WorkType\"".to_owned(),
    };
    pb::WorkUnit {
        unit_id: unit_id.to_owned(),
        state: i32::try_from(status.state.0).unwrap_or(i32::MAX),
        detail: status.detail,
        stdout_size: status.stdout_size,
        work_type: status.work_type,
        extra_data_json,
    }
}

fn watch_event(event: WorkEvent) -> pb::WatchEvent {
    pb::WatchEvent {
        unit: Some(work_unit(&event.unit_id, event.status)),
        released: event.released,
        resync: false,
    }
}

#[tonic::async_trait]
impl pb::work_server::Work for WorkService {
    async fn submit(
        &self,
        request: Request<tonic::Streaming<pb::SubmitRequest>>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        self.ops
            .count_request(crate::metrics::Frontend::Grpc, "work_submit");
        use pb::submit_request::Request as In;
        let caller = caller_of(&request);
        let mut inbound = request.into_inner();
        let header = match inbound.message().await.map_err(request_stream_status)? {
            Some(pb::SubmitRequest {
                request: Some(In::Header(header)),
            }) => header,
            Some(_) => return Err(invalid("the first message must carry header")),
            None => return Err(invalid("the request stream ended before header")),
        };
        let payload_size = header.payload_size;
        let submit = submit_request(header)?;
        let mut submission = self
            .ops
            .work_submit(submit, caller)
            .await
            .map_err(|e| work_status(&e))?;
        // Each message reaches the disk before the next one is pulled from the client, so
        // HTTP/2 flow control holds the client back instead of memory filling up here.
        let upload = async {
            while let Some(message) = inbound.message().await.map_err(request_stream_status)? {
                match message.request {
                    Some(In::Payload(bytes)) => {
                        submission
                            .receive(&mut bytes.as_slice())
                            .await
                            .map_err(|e| work_status(&e))?;
                    }
                    Some(In::Header(_)) => {
                        return Err(invalid("only the first message may carry header"));
                    }
                    None => {}
                }
            }
            Ok(())
        };
        // On error or shutdown the submission is dropped unstarted: the unit ends Failed.
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Err(super::shutting_down()),
            uploaded = upload => uploaded?,
        }
        if payload_size != 0 && submission.received() != payload_size {
            return Err(invalid(format!(
                "payload_size says {} bytes but {} arrived",
                payload_size,
                submission.received()
            )));
        }
        let unit_id = submission.unit_id().to_owned();
        let outcome = submission.start().await.map_err(|e| work_status(&e))?;
        let status = self
            .ops
            .work_status(&unit_id)
            .await
            .map_err(|e| work_status(&e))?;
        Ok(Response::new(pb::SubmitResponse {
            unit: Some(work_unit(&unit_id, status)),
            result: outcome.as_str().to_owned(),
        }))
    }

    async fn list(
        &self,
        _request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        self.ops
            .count_request(crate::metrics::Frontend::Grpc, "work_list");
        let units = self
            .ops
            .work_list(None)
            .await
            .map_err(|e| work_status(&e))?;
        Ok(Response::new(pb::ListResponse {
            units: units
                .into_iter()
                .map(|(id, status)| work_unit(&id, status))
                .collect(),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::WorkUnit>, Status> {
        self.ops
            .count_request(crate::metrics::Frontend::Grpc, "work_status");
        let unit_id = request.into_inner().unit_id;
        required_unit(&unit_id)?;
        let status = self
            .ops
            .work_status(&unit_id)
            .await
            .map_err(|e| work_status(&e))?;
        Ok(Response::new(work_unit(&unit_id, status)))
    }

    type ResultsStream = BoxStream<pb::ResultsResponse>;

    async fn results(
        &self,
        request: Request<pb::ResultsRequest>,
    ) -> Result<Response<Self::ResultsStream>, Status> {
        self.ops
            .count_request(crate::metrics::Frontend::Grpc, "work_results");
        use pb::results_response::Response as Out;
        let caller = caller_of(&request);
        let request = request.into_inner();
        check_results(&request)?;
        let mut results = self
            .ops
            .work_results(&request.unit_id, request.offset, &request.signature, caller)
            .await
            .map_err(|e| work_status(&e))?;
        if !request.follow {
            results = results.without_follow();
        }
        let unit_id = request.unit_id;
        // Read one chunk per message the client takes: nothing is read ahead of it.
        let stream = futures_util::stream::unfold(Some(results), move |results| {
            let unit_id = unit_id.clone();
            async move {
                let mut results = results?;
                match results.next_chunk().await {
                    Ok(Some(chunk)) => {
                        let data = pb::ResultsResponse {
                            response: Some(Out::Data(chunk)),
                        };
                        Some((Ok(data), Some(results)))
                    }
                    Ok(None) => {
                        let end = pb::ResultsEnd {
                            unit: Some(work_unit(&unit_id, results.unit_status())),
                            end_offset: i64::try_from(results.position()).unwrap_or(i64::MAX),
                        };
                        let end = pb::ResultsResponse {
                            response: Some(Out::End(end)),
                        };
                        Some((Ok(end), None))
                    }
                    Err(error) => Some((
                        Err(Status::internal(format!(
                            "cannot read the output of {unit_id}: {error}"
                        ))),
                        None,
                    )),
                }
            }
        });
        Ok(Response::new(until_shutdown(stream, self.cancel.clone())))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        self.ops
            .count_request(crate::metrics::Frontend::Grpc, "work_cancel");
        let caller = caller_of(&request);
        let request = request.into_inner();
        required_unit(&request.unit_id)?;
        let outcome = self
            .ops
            .work_cancel(&request.unit_id, &request.signature, caller)
            .await
            .map_err(|e| work_status(&e))?;
        Ok(Response::new(pb::CancelResponse {
            pending: outcome == Outcome::Pending,
        }))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        self.ops
            .count_request(crate::metrics::Frontend::Grpc, "work_release");
        let caller = caller_of(&request);
        let request = request.into_inner();
        required_unit(&request.unit_id)?;
        let outcome = self
            .ops
            .work_release(&request.unit_id, request.force, &request.signature, caller)
            .await
            .map_err(|e| work_status(&e))?;
        Ok(Response::new(pb::ReleaseResponse {
            pending: outcome == Outcome::Pending,
        }))
    }

    type WatchStream = BoxStream<pb::WatchEvent>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.ops
            .count_request(crate::metrics::Frontend::Grpc, "work_watch");
        let request = request.into_inner();
        let scope = Some(request.unit_id).filter(|id| !id.is_empty());
        // Subscribe before listing, so no change between the two is missed.
        let events = self.ops.work_changes().map_err(|e| work_status(&e))?;
        let mut pending = VecDeque::new();
        if request.include_existing || scope.is_some() {
            // A scoped watch of an unknown unit is NOT_FOUND, with or without existing.
            let units = self
                .ops
                .work_list(scope.as_deref())
                .await
                .map_err(|e| work_status(&e))?;
            if request.include_existing {
                pending.extend(units.into_iter().map(|(id, status)| pb::WatchEvent {
                    unit: Some(work_unit(&id, status)),
                    released: false,
                    resync: false,
                }));
            }
        }
        struct Watch {
            ops: Ops,
            events: tokio::sync::broadcast::Receiver<WorkEvent>,
            scope: Option<String>,
            pending: VecDeque<pb::WatchEvent>,
            done: bool,
        }
        let state = Watch {
            ops: self.ops.clone(),
            events,
            scope,
            pending,
            done: false,
        };
        let stream = futures_util::stream::unfold(state, |mut w| async move {
            loop {
                if let Some(event) = w.pending.pop_front() {
                    return Some((Ok(event), w));
                }
                if w.done {
                    return None;
                }
                match w.events.recv().await {
                    Ok(event) => {
                        if w.scope.as_ref().is_some_and(|id| *id != event.unit_id) {
                            continue;
                        }
                        // A scoped watch ends after its unit's release.
                        w.done = w.scope.is_some() && event.released;
                        return Some((Ok(watch_event(event)), w));
                    }
                    Err(RecvError::Lagged(_)) => {
                        // Missed changes: say so, then the current state of every watched unit.
                        w.pending.push_back(pb::WatchEvent {
                            unit: None,
                            released: false,
                            resync: true,
                        });
                        match w.ops.work_list(w.scope.as_deref()).await {
                            Ok(units) => w.pending.extend(units.into_iter().map(|(id, status)| {
                                pb::WatchEvent {
                                    unit: Some(work_unit(&id, status)),
                                    released: false,
                                    resync: false,
                                }
                            })),
                            // The scoped unit is gone: it was released meanwhile.
                            Err(_) => w.done = true,
                        }
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        });
        Ok(Response::new(until_shutdown(stream, self.cancel.clone())))
    }
}
