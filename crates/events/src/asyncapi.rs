//! The AsyncAPI document, generated from the catalog's Rust types.
//!
//! `docs/asyncapi.json` is this document checked in; a test fails when it is stale.
//! Regenerate it with `UPDATE_ASYNCAPI=1 cargo nextest run -p mp-events asyncapi`.

use schemars::r#gen::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::catalog::catalog;

pub fn document() -> Value {
    let mut generator = SchemaSettings::draft07()
        .with(|s| s.definitions_path = "#/components/schemas/".into())
        .into_generator();
    let mut channels = Map::new();
    let mut messages = Map::new();
    for spec in catalog() {
        let name = spec.event_type.replace('.', "_");
        let payload = (spec.schema)(&mut generator);
        messages.insert(
            name.clone(),
            json!({
                "name": spec.event_type,
                "title": spec.event_type,
                "summary": spec.summary,
                "contentType": "application/json",
                "payload": payload,
                "headers": {
                    "type": "object",
                    "properties": { "traceparent": { "type": "string" } }
                },
                "x-version": spec.version,
            }),
        );
        let consumers: Vec<Value> = spec
            .consumers
            .iter()
            .map(|(svc, handler)| json!({"service": svc, "handler": handler}))
            .collect();
        channels.insert(
            spec.event_type.to_owned(),
            json!({
                "description": format!("Routing key `{}` on the events topic exchange.", spec.event_type),
                "x-publisher": spec.publisher,
                "x-consumers": consumers,
                "subscribe": {
                    "operationId": format!("on_{name}"),
                    "summary": spec.summary,
                    "message": { "$ref": format!("#/components/messages/{name}") }
                },
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": { "name": "{prefix}.events", "type": "topic", "durable": true, "autoDelete": false },
                        "bindingVersion": "0.2.0"
                    }
                }
            }),
        );
    }
    let schemas: Map<String, Value> = generator
        .take_definitions()
        .into_iter()
        .map(|(k, v)| (k, serde_json::to_value(v).expect("schemas serialize")))
        .collect();
    json!({
        "asyncapi": "2.6.0",
        "info": {
            "title": "Marketplace events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every event of the Marketplace services. Each message is an envelope \
                (id, type, version, occurred_at, source, correlation_id, causation_id, traceparent) \
                around the typed payload, published through a transactional outbox to one durable \
                topic exchange with the event type as routing key."
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": { "url": "127.0.0.1:5672", "protocol": "amqp", "protocolVersion": "0.9.1" }
        },
        "channels": channels,
        "components": { "messages": messages, "schemas": schemas }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asyncapi_document_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/asyncapi.json");
        let fresh = serde_json::to_string_pretty(&document()).expect("serializes") + "\n";
        if std::env::var_os("UPDATE_ASYNCAPI").is_some() {
            std::fs::write(path, &fresh).expect("write docs/asyncapi.json");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == fresh,
            "docs/asyncapi.json is stale; regenerate it with UPDATE_ASYNCAPI=1 cargo nextest run -p mp-events asyncapi"
        );
    }

    #[test]
    fn every_event_has_a_channel_and_a_message() {
        let doc = document();
        for spec in catalog() {
            assert!(
                doc["channels"][spec.event_type].is_object(),
                "{}",
                spec.event_type
            );
            let msg = &doc["components"]["messages"][spec.event_type.replace('.', "_")];
            assert!(
                msg["payload"]["$ref"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("#/components/schemas/Envelope"))
            );
        }
    }
}
