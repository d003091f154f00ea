//! The finishing pass every service's OpenAPI document goes through, so the contract is
//! exact without each handler repeating it:
//!
//! - every error response is `application/problem+json` with the [`Problem`] schema;
//! - the errors the shared layers and extractors can produce are attached to each
//!   operation they apply to: 400 (malformed JSON, path or query), 401 and 403 (a secured
//!   operation), 413 and 415 (a request body), 422 (fields that break a rule), 429 (rate
//!   limited) and 503 (a dependency is down, or the request timed out);
//! - the headers those answers carry (`Retry-After`, `WWW-Authenticate`) and the
//!   `Location` of every 201 are documented;
//! - a string with no pattern, format or enum of its own gets the pattern [`NO_NUL`]: the
//!   services refuse the NUL character everywhere (PostgreSQL cannot store it), and the
//!   document says so.
//!
//! A handler documents only what is its own: its success responses, and the errors with a
//! meaning of their own (404, 409, a 422 whose rule JSON Schema cannot express). Where it
//! documents a status listed above, its description wins.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::Response;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayItems, ObjectBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Header, OpenApi, Ref, RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::problem::{FieldError, PROBLEM_JSON, Problem};

/// Any text without the NUL character.
pub const NO_NUL: &str = "^[^\\u0000]*$";

/// Titles the document, adds the bearer scheme and the Problem schemas, and attaches the
/// shared error responses and headers to every operation.
pub fn finish_openapi(mut doc: OpenApi, service: &str) -> OpenApi {
    doc.info.title = format!("Marketplace {service} service");
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    components
        .schemas
        .insert(Problem::name().into_owned(), Problem::schema());
    components
        .schemas
        .insert(FieldError::name().into_owned(), FieldError::schema());
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
        {
            finish_operation(op);
            if let Some(body) = &mut op.request_body {
                for content in body.content.values_mut() {
                    content.schema.iter_mut().for_each(no_nul);
                }
            }
            for param in op.parameters.iter_mut().flatten() {
                param.schema.iter_mut().for_each(no_nul);
            }
        }
    }
    if let Some(components) = &mut doc.components {
        components.schemas.values_mut().for_each(no_nul);
    }
    doc
}

/// Gives every unconstrained string in the schema the [`NO_NUL`] pattern.
fn no_nul(schema: &mut RefOr<Schema>) {
    let RefOr::T(schema) = schema else {
        return;
    };
    match schema {
        Schema::Object(object) => {
            let is_string = match &object.schema_type {
                SchemaType::Type(t) => *t == Type::String,
                SchemaType::Array(types) => types.contains(&Type::String),
                SchemaType::AnyValue => false,
            };
            if is_string
                && object.pattern.is_none()
                && object.format.is_none()
                && object.enum_values.is_none()
            {
                object.pattern = Some(NO_NUL.into());
            }
            object.properties.values_mut().for_each(no_nul);
            if let Some(extra) = object.additional_properties.as_deref_mut()
                && let AdditionalProperties::RefOr(extra) = extra
            {
                no_nul(extra);
            }
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                no_nul(items);
            }
        }
        Schema::OneOf(one) => one.items.iter_mut().for_each(no_nul),
        Schema::AllOf(all) => all.items.iter_mut().for_each(no_nul),
        Schema::AnyOf(any) => any.items.iter_mut().for_each(no_nul),
        _ => {}
    }
}

/// What an operation takes, which decides the shared errors it can answer with.
struct Takes {
    body: bool,
    path: bool,
    query: bool,
    auth: bool,
}

impl Takes {
    fn of(op: &Operation) -> Self {
        let params = op.parameters.as_deref().unwrap_or_default();
        Self {
            body: op.request_body.is_some(),
            path: params
                .iter()
                .any(|p| matches!(p.parameter_in, ParameterIn::Path)),
            query: params
                .iter()
                .any(|p| matches!(p.parameter_in, ParameterIn::Query)),
            auth: op
                .security
                .as_ref()
                .is_some_and(|s| s.iter().any(|r| *r != Default::default())),
        }
    }
}

fn finish_operation(op: &mut Operation) {
    let takes = Takes::of(op);
    let shared: [(&str, bool, &str); 8] = [
        (
            "400",
            takes.body || takes.path || takes.query,
            "Malformed request: the body is not JSON, or a path or query parameter has the wrong type.",
        ),
        (
            "401",
            takes.auth,
            "No valid bearer token: missing, malformed, expired, signed by an unknown key, or its session has ended.",
        ),
        (
            "403",
            takes.auth,
            "The token is valid but its roles or vendor memberships do not allow this.",
        ),
        ("413", takes.body, "The request body is too large."),
        (
            "415",
            takes.body,
            "The body is not sent as `Content-Type: application/json`.",
        ),
        (
            "422",
            takes.body || takes.query,
            "A field breaks a rule; `errors` lists each field with its message.",
        ),
        (
            "429",
            true,
            "Too many requests; wait for `Retry-After` seconds before trying again.",
        ),
        (
            "503",
            true,
            "A dependency is unavailable, or the request took too long and was stopped (it may or may not have taken effect); retry after `Retry-After` seconds.",
        ),
    ];
    let responses = &mut op.responses.responses;
    for (status, applies, description) in shared {
        if applies && !responses.contains_key(status) {
            responses.insert(status.to_owned(), RefOr::T(Response::new(description)));
        }
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        match status.as_str() {
            "201" => {
                response
                    .headers
                    .entry("Location".into())
                    .or_insert_with(|| {
                        header(
                            Type::String,
                            Some(SchemaFormat::Custom("uri-reference".into())),
                            "Where the created resource is.",
                        )
                    });
            }
            "401" => {
                response
                    .headers
                    .entry("WWW-Authenticate".into())
                    .or_insert_with(|| header(Type::String, None, "`Bearer`."));
            }
            "429" | "503" => {
                response
                    .headers
                    .entry("Retry-After".into())
                    .or_insert_with(|| {
                        header(Type::Integer, None, "Seconds to wait before retrying.")
                    });
            }
            _ => {}
        }
        let is_error = status.starts_with('4') || status.starts_with('5') || status == "default";
        if is_error {
            problem_content(response);
        }
    }
}

/// Makes `application/problem+json` with the Problem schema the only content of an error
/// response, keeping the examples the handler gave.
fn problem_content(response: &mut Response) {
    let mut content = Content::new(Some(Ref::from_schema_name(Problem::name())));
    for (_, old) in response.content.drain(..) {
        if content.example.is_none() {
            content.example = old.example;
        }
        content.examples.extend(old.examples);
    }
    response.content.insert(PROBLEM_JSON.into(), content);
}

fn header(kind: Type, format: Option<SchemaFormat>, description: &str) -> Header {
    let schema = ObjectBuilder::new()
        .schema_type(kind)
        .format(format)
        .build();
    let mut header = Header::new(RefOr::T(Schema::Object(schema)));
    header.description = Some(description.into());
    header
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi as _;

    use super::*;

    #[derive(serde::Deserialize, ToSchema)]
    #[expect(dead_code, reason = "only documented")]
    struct Body {
        name: String,
    }

    /// A thing.
    #[utoipa::path(post, path = "/things", request_body = Body, security(("bearer" = [])),
        responses((status = 201, description = "Created"), (status = 409, description = "Taken", body = Problem)))]
    #[expect(dead_code, reason = "only documented")]
    async fn create() {}

    #[utoipa::path(get, path = "/things/{id}", params(("id" = uuid::Uuid, Path)),
        responses((status = 200, description = "The thing"), (status = 404, description = "No such thing", content_type = "application/json")))]
    #[expect(dead_code, reason = "only documented")]
    async fn read() {}

    #[derive(utoipa::OpenApi)]
    #[openapi(paths(create, read), components(schemas(Body)))]
    struct Doc;

    fn statuses(doc: &serde_json::Value, path: &str, method: &str) -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn shared_errors_are_attached_by_what_an_operation_takes() {
        let doc = serde_json::to_value(finish_openapi(Doc::openapi(), "test")).unwrap();
        assert_eq!(
            statuses(&doc, "/things", "post"),
            [
                "201", "400", "401", "403", "409", "413", "415", "422", "429", "503"
            ]
        );
        // No body and no auth: no 401, 403, 413, 415 or 422.
        assert_eq!(
            statuses(&doc, "/things/{id}", "get"),
            ["200", "400", "404", "429", "503"]
        );
    }

    #[test]
    fn every_error_is_problem_json_and_headers_are_documented() {
        let doc = serde_json::to_value(finish_openapi(Doc::openapi(), "test")).unwrap();
        let post = &doc["paths"]["/things"]["post"]["responses"];
        for status in ["409", "401", "503"] {
            let content = post[status]["content"].as_object().unwrap();
            assert_eq!(content.keys().collect::<Vec<_>>(), [PROBLEM_JSON]);
            assert_eq!(
                content[PROBLEM_JSON]["schema"]["$ref"],
                "#/components/schemas/Problem"
            );
        }
        let not_found = &doc["paths"]["/things/{id}"]["get"]["responses"]["404"]["content"];
        assert!(not_found.get("application/json").is_none(), "{not_found}");
        assert!(post["201"]["headers"]["Location"].is_object());
        assert!(post["503"]["headers"]["Retry-After"].is_object());
        assert!(post["401"]["headers"]["WWW-Authenticate"].is_object());
        assert!(doc["components"]["schemas"]["Problem"].is_object());
        assert!(doc["components"]["schemas"]["FieldError"].is_object());
    }

    #[test]
    fn unconstrained_strings_refuse_nul() {
        let doc = serde_json::to_value(finish_openapi(Doc::openapi(), "test")).unwrap();
        assert_eq!(
            doc["components"]["schemas"]["Body"]["properties"]["name"]["pattern"],
            NO_NUL
        );
        let id = &doc["paths"]["/things/{id}"]["get"]["parameters"][0]["schema"];
        assert_eq!(id["format"], "uuid");
        assert!(id.get("pattern").is_none(), "{id}");
    }
}
