//! `gantry:plugin/commands`: the Web UI API's command lines for the calling user. The
//! caller's tenant, user and permissions come from the request's credentials, never from the
//! component; a call on a route without a user (no `user_auth`) is refused.

use super::CommandsView;
use super::bindings::gantry::plugin::commands as wit;
use super::bindings::gantry::plugin::users::FieldIssue;
use crate::commands::{CommandError, ExecuteRequest, suggest, validate};
use crate::contract::OutputStream;
use crate::store::{CommandOutputRecord, CommandRecord, CommandStatus};
use crate::users::Principal;

fn error(e: CommandError) -> wit::CommandError {
    match e {
        CommandError::NotFound => wit::CommandError::NotFound,
        CommandError::ProjectNotFound => wit::CommandError::ProjectNotFound,
        CommandError::Forbidden(m) => wit::CommandError::Forbidden(m),
        CommandError::Invalid { field, issue } => wit::CommandError::Invalid(FieldIssue {
            field: field.to_string(),
            issue,
        }),
        CommandError::TooMany(m) => wit::CommandError::TooMany(m),
        CommandError::Internal(e) => {
            tracing::error!("command operation failed: {e:#}");
            wit::CommandError::Internal("internal error".into())
        }
    }
}

fn status(s: CommandStatus) -> wit::CommandStatus {
    match s {
        CommandStatus::Running => wit::CommandStatus::Running,
        CommandStatus::Completed => wit::CommandStatus::Completed,
        CommandStatus::Failed => wit::CommandStatus::Failed,
        CommandStatus::Cancelled => wit::CommandStatus::Cancelled,
        CommandStatus::TimedOut => wit::CommandStatus::TimedOut,
        CommandStatus::Interrupted => wit::CommandStatus::Interrupted,
    }
}

fn command(r: CommandRecord) -> wit::Command {
    wit::Command {
        id: r.id,
        command: r.command,
        project_id: r.project_id,
        session_id: r.session_id,
        working_directory: r.working_directory,
        status: status(r.status),
        pid: r.pid,
        exit_code: r.exit_code,
        started_at: r.started_at,
        completed_at: r.completed_at,
        error: r.error,
        truncated: r.truncated,
    }
}

fn line(o: CommandOutputRecord) -> wit::OutputLine {
    wit::OutputLine {
        seq: o.seq,
        stream: if o.stream == "stderr" {
            OutputStream::Stderr
        } else {
            OutputStream::Stdout
        },
        content: o.content,
        at: o.at,
    }
}

fn risk(name: &str) -> Option<wit::Risk> {
    Some(match name {
        "parse_error" => wit::Risk::ParseError,
        "destructive" => wit::Risk::Destructive,
        "outside_workspace" => wit::Risk::OutsideWorkspace,
        "privilege_escalation" => wit::Risk::PrivilegeEscalation,
        "fork_bomb" => wit::Risk::ForkBomb,
        "remote_code" => wit::Risk::RemoteCode,
        _ => return None,
    })
}

impl CommandsView<'_> {
    fn who(&self) -> Result<&Principal, wit::CommandError> {
        self.user.ok_or_else(|| {
            wit::CommandError::Forbidden("commands need a user: this route has no user_auth".into())
        })
    }
}

impl wit::Host for CommandsView<'_> {
    async fn execute(
        &mut self,
        request: wit::ExecuteRequest,
    ) -> Result<wit::Command, wit::CommandError> {
        let who = self.who()?;
        let request = ExecuteRequest {
            command: request.command,
            project_id: request.project_id,
            session_id: request.session_id,
            working_directory: request.working_directory,
            timeout_secs: request.timeout_secs,
            environment: request.environment,
            stream_output: request.stream_output,
        };
        self.commands
            .execute(who, request)
            .await
            .map(command)
            .map_err(error)
    }

    async fn status(
        &mut self,
        id: String,
        after_seq: u64,
    ) -> Result<(wit::Command, Vec<wit::OutputLine>), wit::CommandError> {
        let who = self.who()?;
        let view = self
            .commands
            .status(who, &id, after_seq)
            .await
            .map_err(error)?;
        Ok((
            command(view.record),
            view.output.into_iter().map(line).collect(),
        ))
    }

    async fn cancel(&mut self, id: String) -> Result<wit::Command, wit::CommandError> {
        let who = self.who()?;
        self.commands
            .cancel(who, &id)
            .await
            .map(command)
            .map_err(error)
    }

    async fn running(&mut self) -> Result<Vec<wit::Command>, wit::CommandError> {
        let who = self.who()?;
        let list = self.commands.running(who).await.map_err(error)?;
        Ok(list.into_iter().map(command).collect())
    }

    async fn history(
        &mut self,
        limit: u32,
        offset: u32,
    ) -> Result<wit::CommandPage, wit::CommandError> {
        let who = self.who()?;
        let (list, total) = self
            .commands
            .history(who, limit as usize, offset as usize)
            .await
            .map_err(error)?;
        Ok(wit::CommandPage {
            commands: list.into_iter().map(command).collect(),
            total,
        })
    }

    async fn suggestions(
        &mut self,
        context: String,
        prefix: String,
    ) -> Result<Vec<wit::Suggestion>, wit::CommandError> {
        let who = self.who()?;
        let list = self
            .commands
            .suggestions(who, &context, &prefix)
            .await
            .map_err(error)?;
        Ok(list
            .into_iter()
            .map(|s: suggest::Suggestion| wit::Suggestion {
                command: s.command,
                description: s.description,
                category: s.category,
            })
            .collect())
    }

    async fn validate(
        &mut self,
        command: String,
        check_safety: bool,
    ) -> Result<wit::Validation, wit::CommandError> {
        let who = self.who()?;
        let v: validate::Validation = self
            .commands
            .validate(who, &command, check_safety)
            .map_err(error)?;
        Ok(wit::Validation {
            valid: v.valid,
            safe: v.safe,
            warnings: v.warnings,
            suggestions: v.suggestions,
            risks: v.risks.iter().filter_map(|r| risk(r)).collect(),
        })
    }
}
