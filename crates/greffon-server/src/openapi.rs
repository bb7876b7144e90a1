//! The OpenAPI description of every route, generated from the handlers'
//! annotations (utoipa), with the bearer scheme and its 401 added once,
//! then made as strict as the handlers by `contract`.

use crate::app::App;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use utoipa::OpenApi;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new().route("/v1/openapi.json", get(openapi_route))
}

#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "This description", body = Object)), security(("bearer" = [])))]
pub(crate) async fn openapi_route() -> Response {
    axum::Json(openapi()).into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "greffon", description = "Run plain Python plugins, kernel-sandboxed. Every /v1 route but /v1/health needs `Authorization: Bearer <token>` (the token is in <home>/app/token). Errors are {\"error\", \"kind\"}."),
    paths(crate::plugins::health, crate::plugins::list, crate::plugins::plugin,
          crate::plugins::enable, crate::plugins::disable, crate::plugins::reload,
          crate::plugins::run, openapi_route, crate::plugins::metrics,
          crate::tasks::list, crate::tasks::create, crate::tasks::get_task, crate::tasks::update,
          crate::tasks::delete, crate::tasks::run_now, crate::tasks::runs, crate::tasks::next,
          crate::llm::infer, crate::secrets::list_all, crate::secrets::list_plugin,
          crate::secrets::set, crate::secrets::remove, crate::observe::events,
          crate::observe::dumps, crate::observe::dump, crate::observe::logs),
    modifiers(&Bearer)
)]
struct ApiDoc;

struct Bearer;

impl utoipa::Modify for Bearer {
    /// The bearer scheme, and on every route that needs it the 401 the
    /// guard answers without it (documented once here, not per route).
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::ResponseBuilder;
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for item in api.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    op.responses.responses.entry("401".into()).or_insert_with(|| {
                        ResponseBuilder::new()
                            .description("No bearer token (nor dashboard session), or a wrong one: `{\"error\", \"kind\": \"unauthorized\"}`")
                            .build()
                            .into()
                    });
                }
            }
        }
    }
}

/// The description `/v1/openapi.json` serves: generated from the
/// handlers above, then made as strict as they are (`contract`). Built at
/// the first request: it never changes while the process runs.
pub fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        crate::contract::tighten(&mut doc);
        doc
    })
}
