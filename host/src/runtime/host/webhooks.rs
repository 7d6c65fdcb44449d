//! `gantry:plugin/webhooks`: the calling user's tenant's webhooks and their deliveries. The
//! tenant and permissions come from the request's credentials, never from the component; a
//! call on a route without a user (no `user_auth`) is refused.

use super::WebhooksView;
use super::bindings::gantry::plugin::users::FieldIssue;
use super::bindings::gantry::plugin::webhooks as wit;
use crate::events::EventKind;
use crate::store::{DeliveryRecord, DeliveryStatus};
use crate::users::Principal;
use crate::webhooks::{NewWebhook, Webhook, WebhookChange, WebhookError};

/// Each WIT event with the bus's kind.
const EVENT_KINDS: [(wit::WebhookEvent, EventKind); 8] = [
    (wit::WebhookEvent::TaskCreated, EventKind::TaskCreated),
    (wit::WebhookEvent::TaskUpdated, EventKind::TaskUpdated),
    (wit::WebhookEvent::TaskCompleted, EventKind::TaskCompleted),
    (wit::WebhookEvent::TaskFailed, EventKind::TaskFailed),
    (wit::WebhookEvent::ProjectCreated, EventKind::ProjectCreated),
    (wit::WebhookEvent::ProjectUpdated, EventKind::ProjectUpdated),
    (
        wit::WebhookEvent::SystemMaintenance,
        EventKind::SystemMaintenance,
    ),
    (wit::WebhookEvent::SystemAlert, EventKind::SystemAlert),
];

fn event_name(e: wit::WebhookEvent) -> String {
    let (_, kind) = EVENT_KINDS
        .iter()
        .find(|(w, _)| *w == e)
        .expect("every WIT event is listed");
    kind.as_str().to_string()
}

/// A stored name as the WIT enum; none for a name this gantry does not know.
fn event_kind(name: &str) -> Option<wit::WebhookEvent> {
    let kind = EventKind::parse(name)?;
    EVENT_KINDS
        .iter()
        .find(|(_, k)| *k == kind)
        .map(|(w, _)| *w)
}

fn error(e: WebhookError) -> wit::WebhookError {
    match e {
        WebhookError::NotFound => wit::WebhookError::NotFound,
        WebhookError::DeliveryNotFound => wit::WebhookError::DeliveryNotFound,
        WebhookError::Forbidden(m) => wit::WebhookError::Forbidden(m),
        WebhookError::Invalid { field, issue } => wit::WebhookError::Invalid(FieldIssue {
            field: field.to_string(),
            issue,
        }),
        WebhookError::LimitExceeded(m) => wit::WebhookError::LimitExceeded(m),
        WebhookError::Internal(e) => {
            tracing::error!("webhook operation failed: {e:#}");
            wit::WebhookError::Internal("internal error".into())
        }
    }
}

fn webhook(w: Webhook) -> wit::Webhook {
    wit::Webhook {
        id: w.id,
        url: w.url,
        events: w.events.iter().filter_map(|e| event_kind(e)).collect(),
        active: w.active,
        has_secret: w.has_secret,
        created_at: w.created_at,
        updated_at: w.updated_at,
    }
}

fn delivery(d: DeliveryRecord) -> wit::Delivery {
    wit::Delivery {
        id: d.id,
        webhook_id: d.webhook_id,
        // Stored from the same list; an unknown name is one a newer gantry wrote.
        event: event_kind(&d.event).unwrap_or(wit::WebhookEvent::SystemAlert),
        status: match d.status {
            DeliveryStatus::Pending => wit::DeliveryStatus::Pending,
            DeliveryStatus::Delivered => wit::DeliveryStatus::Delivered,
            DeliveryStatus::Failed => wit::DeliveryStatus::Failed,
        },
        attempts: d.attempts,
        next_attempt_at: d.next_attempt_at,
        last_status: d.last_status,
        last_error: d.last_error,
        created_at: d.created_at,
        updated_at: d.updated_at,
        delivered_at: d.delivered_at,
        payload: String::from_utf8_lossy(&d.body).into_owned(),
    }
}

impl WebhooksView<'_> {
    fn who(&self) -> Result<&Principal, wit::WebhookError> {
        self.user.ok_or_else(|| {
            wit::WebhookError::Forbidden(
                "this needs a logged-in user or an API key on a user_auth route".into(),
            )
        })
    }
}

impl wit::Host for WebhooksView<'_> {
    async fn create(&mut self, new: wit::NewWebhook) -> Result<wit::Created, wit::WebhookError> {
        let who = self.who()?;
        let new = NewWebhook {
            url: new.url,
            events: new.events.into_iter().map(event_name).collect(),
            secret: new.secret,
            active: new.active,
        };
        let created = self.webhooks.create(who, new).await.map_err(error)?;
        Ok(wit::Created {
            webhook: webhook(created.webhook),
            secret: created.secret,
        })
    }

    async fn list_webhooks(&mut self) -> Result<Vec<wit::Webhook>, wit::WebhookError> {
        let who = self.who()?;
        let all = self.webhooks.list(who).await.map_err(error)?;
        Ok(all.into_iter().map(webhook).collect())
    }

    async fn get(&mut self, id: String) -> Result<wit::Webhook, wit::WebhookError> {
        let who = self.who()?;
        self.webhooks
            .get(who, &id)
            .await
            .map(webhook)
            .map_err(error)
    }

    async fn update(
        &mut self,
        id: String,
        change: wit::WebhookChange,
    ) -> Result<wit::Webhook, wit::WebhookError> {
        let who = self.who()?;
        let change = WebhookChange {
            url: change.url,
            events: change
                .events
                .map(|events| events.into_iter().map(event_name).collect()),
            secret: change.secret,
            active: change.active,
        };
        self.webhooks
            .update(who, &id, change)
            .await
            .map(webhook)
            .map_err(error)
    }

    async fn delete(&mut self, id: String) -> Result<(), wit::WebhookError> {
        let who = self.who()?;
        self.webhooks.delete(who, &id).await.map_err(error)
    }

    async fn deliveries(
        &mut self,
        id: String,
        offset: u32,
        limit: u32,
    ) -> Result<wit::DeliveryPage, wit::WebhookError> {
        let who = self.who()?;
        let page = self
            .webhooks
            .deliveries(who, &id, offset, limit)
            .await
            .map_err(error)?;
        Ok(wit::DeliveryPage {
            items: page.items.into_iter().map(delivery).collect(),
            total: page.total,
        })
    }

    async fn redeliver(
        &mut self,
        id: String,
        delivery_id: String,
    ) -> Result<wit::Delivery, wit::WebhookError> {
        let who = self.who()?;
        self.webhooks
            .redeliver(who, &id, &delivery_id)
            .await
            .map(delivery)
            .map_err(error)
    }
}
