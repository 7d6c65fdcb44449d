//! `/api/webhooks`: signed webhooks, which the document describes (events, payload,
//! `X-Signature-256`) without a way to register one. Over `gantry:plugin/webhooks`, which
//! checks URLs, keeps the secret, scopes everything to the caller's tenant and permissions,
//! and delivers through a persisted outbox.

use crate::board::{page_json, paging};
use crate::input::{only, opt_bool, opt_string, opt_strings};
use crate::{Answer, ApiError, object, string, timestamp_ms};
use gantry_guest::http::Request;
use gantry_guest::users::FieldIssue;
use gantry_guest::webhooks::{
    self, Delivery, DeliveryStatus, NewWebhook, Webhook, WebhookChange, WebhookError, WebhookEvent,
};
use serde_json::{Map, Value, json};

/// The document's eight events with their names.
const EVENTS: [(WebhookEvent, &str); 8] = [
    (WebhookEvent::TaskCreated, "task.created"),
    (WebhookEvent::TaskUpdated, "task.updated"),
    (WebhookEvent::TaskCompleted, "task.completed"),
    (WebhookEvent::TaskFailed, "task.failed"),
    (WebhookEvent::ProjectCreated, "project.created"),
    (WebhookEvent::ProjectUpdated, "project.updated"),
    (WebhookEvent::SystemMaintenance, "system.maintenance"),
    (WebhookEvent::SystemAlert, "system.alert"),
];

const FIELDS: [&str; 4] = ["url", "events", "secret", "active"];

fn error(e: WebhookError) -> ApiError {
    match e {
        WebhookError::NotFound => ApiError::new(404, "WEBHOOK_NOT_FOUND", "Webhook not found."),
        WebhookError::DeliveryNotFound => {
            ApiError::new(404, "DELIVERY_NOT_FOUND", "Delivery not found.")
        }
        WebhookError::Forbidden(m) => ApiError::new(403, "AUTH_INSUFFICIENT_PERMISSIONS", m),
        WebhookError::Invalid(FieldIssue { field, issue }) => ApiError::invalid(&field, issue),
        WebhookError::LimitExceeded(m) => ApiError::new(409, "WEBHOOK_LIMIT_EXCEEDED", m),
        WebhookError::Internal(m) => ApiError::new(500, "DATABASE_ERROR", m),
    }
}

fn event_name(e: WebhookEvent) -> &'static str {
    EVENTS
        .iter()
        .find(|(k, _)| *k == e)
        .map_or("system.alert", |(_, n)| n)
}

fn events(names: Vec<String>) -> Result<Vec<WebhookEvent>, ApiError> {
    names
        .iter()
        .map(|name| {
            EVENTS
                .iter()
                .find(|(_, n)| n == name)
                .map(|(k, _)| *k)
                .ok_or_else(|| {
                    let known: Vec<&str> = EVENTS.iter().map(|(_, n)| *n).collect();
                    ApiError::invalid(
                        "events",
                        format!(
                            "unknown event {name:?}; the events are {}",
                            known.join(", ")
                        ),
                    )
                })
        })
        .collect()
}

fn webhook_json(w: &Webhook) -> Value {
    json!({
        "id": w.id,
        "url": w.url,
        "events": w.events.iter().map(|e| event_name(*e)).collect::<Vec<_>>(),
        "active": w.active,
        "has_secret": w.has_secret,
        "created_at": timestamp_ms(w.created_at),
        "updated_at": timestamp_ms(w.updated_at),
    })
}

fn delivery_json(d: &Delivery) -> Value {
    let status = match d.status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Failed => "failed",
    };
    // The payload as sent; it is JSON the host built.
    let payload = serde_json::from_str::<Value>(&d.payload).unwrap_or(Value::Null);
    json!({
        "id": d.id,
        "webhook_id": d.webhook_id,
        "event": event_name(d.event),
        "status": status,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.map(timestamp_ms),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": timestamp_ms(d.created_at),
        "updated_at": timestamp_ms(d.updated_at),
        "delivered_at": d.delivered_at.map(timestamp_ms),
        "payload": payload,
    })
}

fn required_events(body: &Map<String, Value>) -> Result<Vec<WebhookEvent>, ApiError> {
    match opt_strings(body, "events")? {
        Some(names) => events(names),
        None => Err(ApiError::invalid("events", "Field is required")),
    }
}

/// `POST /api/webhooks`: 201 with the webhook and, this once, its secret.
pub fn create(request: Request) -> Answer {
    let body = object(request)?;
    only(&body, &FIELDS)?;
    let url = string(&body, "url")?;
    let events = required_events(&body)?;
    let new = NewWebhook {
        url,
        events,
        secret: opt_string(&body, "secret")?,
        active: opt_bool(&body, "active")?.unwrap_or(true),
    };
    let created = webhooks::create(&new).map_err(error)?;
    let mut data = webhook_json(&created.webhook);
    data["secret"] = json!(created.secret);
    Ok((201, data))
}

/// `GET /api/webhooks`.
pub fn list() -> Answer {
    let all = webhooks::list_webhooks().map_err(error)?;
    let items: Vec<Value> = all.iter().map(webhook_json).collect();
    Ok((200, json!({ "items": items, "total": items.len() })))
}

/// `GET /api/webhooks/{id}`.
pub fn get(id: &str) -> Answer {
    let w = webhooks::get(id).map_err(error)?;
    Ok((200, webhook_json(&w)))
}

/// `PUT /api/webhooks/{id}`: the fields given change; the secret is never shown.
pub fn update(request: Request, id: &str) -> Answer {
    let body = object(request)?;
    only(&body, &FIELDS)?;
    let change = WebhookChange {
        url: opt_string(&body, "url")?,
        events: match opt_strings(&body, "events")? {
            Some(names) => Some(events(names)?),
            None => None,
        },
        secret: opt_string(&body, "secret")?,
        active: opt_bool(&body, "active")?,
    };
    let w = webhooks::update(id, &change).map_err(error)?;
    Ok((200, webhook_json(&w)))
}

/// `DELETE /api/webhooks/{id}`.
pub fn delete(id: &str) -> Answer {
    webhooks::delete(id).map_err(error)?;
    Ok((200, json!({ "message": "Webhook deleted.", "id": id })))
}

/// `GET /api/webhooks/{id}/deliveries?page=&page_size=`: newest first.
pub fn deliveries(request: &Request, id: &str) -> Answer {
    let (page, page_size, offset) = paging(request)?;
    let found = webhooks::deliveries(id, offset, page_size as u32).map_err(error)?;
    let items = found.items.iter().map(delivery_json).collect();
    Ok((200, page_json(request, items, found.total, page, page_size)))
}

/// `POST /api/webhooks/{id}/deliveries/{delivery}/redeliver`: 202, sent again soon.
pub fn redeliver(id: &str, delivery: &str) -> Answer {
    let d = webhooks::redeliver(id, delivery).map_err(error)?;
    Ok((202, delivery_json(&d)))
}
