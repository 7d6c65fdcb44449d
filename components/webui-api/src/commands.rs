//! Command lines: `/api/commands/execute`, `{id}/status`, `{id}/cancel`, `running`,
//! `history`, `suggestions` and `validate`. The host runs each line as `sh -c LINE` only inside
//! the task sandbox, keeps its output, and checks the caller's permissions
//! (`gantry:plugin/commands`); this component checks shapes and words answers in the
//! document's form (`running` is `running`; a timeout is `timeout`, with exit code -15).

use crate::input::{field, only, opt_bool, opt_int, opt_string, query_int, query_text};
use crate::{Answer, ApiError, object, string, timestamp_ms};
use gantry_guest::commands::{
    self, Command, CommandError, CommandStatus, ExecuteRequest, OutputLine, Risk,
};
use gantry_guest::http::Request;
use gantry_guest::types::OutputStream;
use serde_json::{Value, json};

/// The most lines one history page holds.
const MAX_HISTORY: i64 = 100;

/// The route under `/api/commands/` for `method`.
pub(crate) fn dispatch(request: Request, method: &str, rest: &[&str]) -> Answer {
    match (method, rest) {
        ("POST", ["execute"]) => execute(request),
        ("GET", ["running"]) => running(),
        ("GET", ["history"]) => history(&request),
        ("GET", ["suggestions"]) => suggestions(&request),
        ("POST", ["validate"]) => validate(request),
        ("GET", [id, "status"]) => status(&request, id),
        ("POST", [id, "cancel"]) => cancel(id),
        (
            _,
            ["execute" | "running" | "history" | "suggestions" | "validate"]
            | [_, "status" | "cancel"],
        ) => Err(ApiError::new(
            405,
            "METHOD_NOT_ALLOWED",
            format!("{method} is not allowed here"),
        )),
        _ => Err(ApiError::new(404, "RESOURCE_NOT_FOUND", "no such endpoint")),
    }
}

fn error(e: CommandError) -> ApiError {
    match e {
        CommandError::NotFound => ApiError::new(404, "RESOURCE_NOT_FOUND", "Command not found."),
        CommandError::ProjectNotFound => {
            ApiError::new(404, "PROJECT_NOT_FOUND", "Project not found.")
        }
        CommandError::Forbidden(m) => ApiError::new(403, "AUTH_INSUFFICIENT_PERMISSIONS", m),
        CommandError::Invalid(issue) => ApiError::invalid(&issue.field, issue.issue),
        CommandError::TooMany(m) => ApiError {
            retry_after: Some(5),
            ..ApiError::new(429, "RATE_LIMIT_EXCEEDED", m)
        },
        CommandError::Internal(m) => ApiError::new(500, "INTERNAL_ERROR", m),
    }
}

fn status_name(s: CommandStatus) -> &'static str {
    match s {
        CommandStatus::Running => "running",
        CommandStatus::Completed => "completed",
        CommandStatus::Failed => "failed",
        CommandStatus::Cancelled => "cancelled",
        CommandStatus::TimedOut => "timeout",
        CommandStatus::Interrupted => "interrupted",
    }
}

fn risk_name(r: Risk) -> &'static str {
    match r {
        Risk::ParseError => "parse_error",
        Risk::Destructive => "destructive",
        Risk::OutsideWorkspace => "outside_workspace",
        Risk::PrivilegeEscalation => "privilege_escalation",
        Risk::ForkBomb => "fork_bomb",
        Risk::RemoteCode => "remote_code",
    }
}

/// Seconds from its start to its end (or to now, while it runs), to a tenth.
fn duration(c: &Command) -> f64 {
    let end = c.completed_at.unwrap_or_else(crate::now_ms);
    ((end - c.started_at).max(0) as f64 / 100.0).round() / 10.0
}

fn command_json(c: &Command) -> Value {
    json!({
        "command_id": c.id,
        "command": c.command,
        "status": status_name(c.status),
        "pid": c.pid,
        "project_id": c.project_id,
        "session_id": c.session_id,
        "working_directory": c.working_directory,
        "started_at": timestamp_ms(c.started_at),
        "completed_at": c.completed_at.map(timestamp_ms),
        "exit_code": c.exit_code,
        "duration": duration(c),
        "error": c.error,
        "output_truncated": c.truncated,
    })
}

fn line_json(l: &OutputLine) -> Value {
    json!({
        "seq": l.seq,
        "timestamp": gantry_guest::time::iso8601(l.at),
        "stream": match l.stream { OutputStream::Stdout => "stdout", OutputStream::Stderr => "stderr" },
        "content": l.content,
    })
}

fn execute(request: Request) -> Answer {
    let body = object(request)?;
    only(
        &body,
        &[
            "command",
            "working_directory",
            "timeout",
            "environment",
            "stream_output",
            "project_id",
            "session_id",
        ],
    )?;
    let command = string(&body, "command")?;
    let timeout = opt_int(&body, "timeout", 1..=i64::from(u32::MAX))?.map(|t| t as u64);
    let environment = match field(&body, "environment").flatten() {
        None => Vec::new(),
        Some(Value::Object(vars)) => vars
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::invalid(
                    "environment",
                    format!("the value of {k} must be a string"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::invalid("environment", "must be an object")),
    };
    let request = ExecuteRequest {
        command,
        project_id: opt_string(&body, "project_id")?,
        session_id: opt_string(&body, "session_id")?,
        working_directory: opt_string(&body, "working_directory")?,
        timeout_secs: timeout,
        environment,
        stream_output: opt_bool(&body, "stream_output")?.unwrap_or(false),
    };
    let c = commands::execute(&request).map_err(error)?;
    // 202 while it runs on; 201 when it is already over (it could not start).
    let code = if c.status == CommandStatus::Running {
        202
    } else {
        201
    };
    Ok((
        code,
        json!({
            "command_id": c.id,
            "status": status_name(c.status),
            "pid": c.pid,
            "started_at": timestamp_ms(c.started_at),
            "error": c.error,
        }),
    ))
}

fn status(request: &Request, id: &str) -> Answer {
    let after = query_int(request, "after_seq", 0, 0..=i64::MAX)? as u64;
    let (c, output) = commands::status(id, after).map_err(error)?;
    let mut data = command_json(&c);
    data["output"] = Value::Array(output.iter().map(line_json).collect());
    Ok((200, data))
}

fn cancel(id: &str) -> Answer {
    let c = commands::cancel(id).map_err(error)?;
    Ok((
        200,
        json!({
            "command_id": c.id,
            "status": status_name(c.status),
            "cancelled_at": (c.status == CommandStatus::Cancelled)
                .then(|| c.completed_at.map(timestamp_ms))
                .flatten(),
            "exit_code": c.exit_code,
        }),
    ))
}

fn running() -> Answer {
    let list = commands::running().map_err(error)?;
    Ok((
        200,
        json!({
            "commands": list.iter().map(command_json).collect::<Vec<_>>(),
            "total_running": list.len(),
        }),
    ))
}

fn history(request: &Request) -> Answer {
    let limit = query_int(request, "limit", 50, 1..=MAX_HISTORY)?;
    let offset = query_int(request, "offset", 0, 0..=i64::from(u32::MAX))?;
    let page = commands::history(limit as u32, offset as u32).map_err(error)?;
    Ok((
        200,
        json!({
            "commands": page.commands.iter().map(command_json).collect::<Vec<_>>(),
            "total": page.total,
            "limit": limit,
            "offset": offset,
        }),
    ))
}

fn suggestions(request: &Request) -> Answer {
    let context = query_text(request, "context").unwrap_or_default();
    let prefix = request.query("prefix").unwrap_or_default();
    if context.len() > 200 || prefix.len() > 1000 {
        return Err(ApiError::invalid("prefix", "is too long"));
    }
    let list = commands::suggestions(&context, &prefix).map_err(error)?;
    let items: Vec<Value> = list
        .iter()
        .map(|s| json!({ "command": s.command, "description": s.description, "category": s.category }))
        .collect();
    Ok((200, json!({ "suggestions": items })))
}

fn validate(request: Request) -> Answer {
    let body = object(request)?;
    only(&body, &["command", "check_safety"])?;
    let command = string(&body, "command")?;
    let check_safety = opt_bool(&body, "check_safety")?.unwrap_or(true);
    let v = commands::validate(&command, check_safety).map_err(error)?;
    Ok((
        200,
        json!({
            "valid": v.valid,
            "safe": v.safe,
            "warnings": v.warnings,
            "suggestions": v.suggestions,
            "risks": v.risks.iter().map(|r| risk_name(*r)).collect::<Vec<_>>(),
        }),
    ))
}
