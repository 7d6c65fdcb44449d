//! `/api/health`, `/api/system/info` and the calling user's profile and preferences: figures
//! from the host (`host-info`) and the store, never made up.

use crate::board;
use crate::{Answer, ApiError, MAX_BODY, object, permission_name, timestamp_ms, user_error};
use gantry_guest::host_info;
use gantry_guest::http::Request;
use gantry_guest::identity::{self, Permission};
use gantry_guest::projects;
use gantry_guest::users;
use serde_json::{Value, json};

/// `GET /api/health/`: whether the node and its store answer. Public.
pub fn health() -> Answer {
    let node = host_info::info();
    let healthy = node.store.available;
    let data = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "timestamp": timestamp_ms(crate::now_ms()),
        "uptime": node.uptime_ms / 1000,
        "version": node.version,
    });
    if healthy {
        Ok((200, data))
    } else {
        Err(ApiError {
            details: data,
            ..ApiError::new(503, "DATABASE_ERROR", "The store does not answer.")
        })
    }
}

/// `GET /api/health/detailed`: the store asked and timed now, and the node's last minute of
/// requests, from its metrics.
pub fn detailed() -> Answer {
    let store = host_info::check_store();
    let traffic = host_info::recent_traffic();
    let node = host_info::info();
    let error_rate =
        (traffic.requests > 0).then(|| traffic.server_errors as f64 / traffic.requests as f64);
    Ok((
        200,
        json!({
            "status": if store.available { "healthy" } else { "unhealthy" },
            "timestamp": timestamp_ms(crate::now_ms()),
            "uptime": node.uptime_ms / 1000,
            "version": node.version,
            "checks": {
                "database": {
                    "status": if store.available { "healthy" } else { "unhealthy" },
                    "response_time": store.response_ms,
                },
                "websocket": {
                    "status": "healthy",
                    "active_connections": host_info::node_load().websocket_connections,
                },
                "component_instances": {
                    "active": node.active_instances,
                },
                "sandbox": { "status": node.sandbox },
            },
            "metrics": {
                "requests_per_minute": traffic.requests,
                "average_response_time": traffic.average_response_ms,
                "error_rate": error_rate,
                "client_error_rate": (traffic.requests > 0)
                    .then(|| traffic.client_errors as f64 / traffic.requests as f64),
            },
        }),
    ))
}

/// `GET /api/system/info`: the version, what this node has, and the limits it applies.
pub fn info() -> Answer {
    let node = host_info::info();
    let backends: Vec<&str> = node
        .plugins
        .iter()
        .filter(|p| matches!(p.kind, gantry_guest::types::PluginKind::Backend))
        .map(|p| p.name.as_str())
        .collect();
    Ok((
        200,
        json!({
            "version": node.version,
            "environment": "production",
            "features": {
                "websocket_enabled": false,
                "task_queues": true,
                "redis_enabled": false,
                "monitoring_enabled": true,
                "full_text_search": true,
            },
            "backends": backends,
            "sandbox": node.sandbox,
            "limits": {
                "max_page_size": 100,
                "max_request_body_bytes": MAX_BODY,
                "max_tags_per_task": 20,
                "max_title_length": 500,
                "max_description_length": 10_000,
                "max_search_length": 500,
            },
        }),
    ))
}

/// `GET /api/users/profile`: the caller, its preferences and what it did (from the store).
pub fn profile() -> Answer {
    let caller = identity::user()
        .ok_or_else(|| ApiError::new(401, "AUTH_TOKEN_MISSING", "An access token is required."))?;
    let me = users::me().map_err(user_error)?;
    let preferences = users::preferences().map_err(user_error)?;
    let counts = projects::my_statistics().map_err(board::error)?;
    let role = if caller.permissions.contains(&Permission::Admin) {
        "admin"
    } else if caller.permissions.contains(&Permission::Write) {
        "developer"
    } else {
        "viewer"
    };
    Ok((
        200,
        json!({
            "id": caller.id,
            "username": caller.username,
            "email": caller.email,
            "full_name": null,
            "avatar_url": null,
            "role": role,
            "service": caller.service,
            "permissions": caller.permissions.iter().map(|p| permission_name(*p)).collect::<Vec<_>>(),
            "created_at": me.as_ref().map(|u| timestamp_ms(u.created_at)),
            "last_login": me.as_ref().and_then(|u| u.last_login).map(timestamp_ms),
            "preferences": serde_json::from_str::<Value>(&preferences).unwrap_or_else(|_| json!({})),
            "statistics": {
                "tasks_created": counts.tasks_created,
                "tasks_completed": counts.tasks_completed,
                "projects_created": counts.projects_created,
                // Sessions are not timed: no figure rather than a made-up one.
                "total_login_time": null,
            },
        }),
    ))
}

/// `PUT /api/users/preferences`: the body replaces the caller's preferences.
pub fn set_preferences(request: Request) -> Answer {
    let body = object(request)?;
    let text = Value::Object(body).to_string();
    let at = users::set_preferences(&text).map_err(user_error)?;
    let stored = users::preferences().map_err(user_error)?;
    Ok((
        200,
        json!({
            "preferences": serde_json::from_str::<Value>(&stored).unwrap_or_else(|_| json!({})),
            "updated_at": timestamp_ms(at),
        }),
    ))
}
