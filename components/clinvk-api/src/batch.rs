//! `POST /api/v1/parallel`, `/chain` and `/compare`: several ephemeral runs in one request.

use crate::request::{self, ApiError, Fields, PromptSpec};
use crate::run::{self, Fresh, Outcome, Placement, Running};
use crate::{check_backends, default_timeout, setting_u64};
use gantry_guest::bindings::gantry::plugin::{backends, tasks};
use gantry_guest::types::TaskState;
use serde_json::{Map, Value, json};
use std::collections::VecDeque;

/// Run `jobs`, at most `max_parallel` at once; with `fail_fast`, the first failure cancels the
/// rest. Outcomes in job order. Every job is ephemeral: workspaces made here are removed.
fn run_batch(jobs: Vec<PromptSpec>, max_parallel: usize, fail_fast: bool) -> Vec<Outcome> {
    let timeout = default_timeout();
    let mut outcomes: Vec<Option<Outcome>> = (0..jobs.len()).map(|_| None).collect();
    let mut pending: VecDeque<usize> = (0..jobs.len()).collect();
    let mut running: Vec<(usize, Running)> = Vec::new();
    let mut stopping = false;
    loop {
        while !stopping && running.len() < max_parallel.max(1) {
            let Some(i) = pending.pop_front() else { break };
            let spec = &jobs[i];
            if spec.dry_run {
                outcomes[i] = Some(dry_run_outcome(spec));
                continue;
            }
            let started = run::place(spec, Fresh::ForCall).and_then(|p| {
                let p = p.expect("place creates a workspace when asked");
                run::start(spec, p, None, timeout)
            });
            match started {
                Ok(r) => running.push((i, r)),
                Err(e) => {
                    outcomes[i] = Some(Outcome::not_started(
                        &spec.backend,
                        TaskState::Failed,
                        e.message,
                    ));
                    stopping |= fail_fast;
                }
            }
        }
        if running.is_empty() {
            break;
        }
        let ids: Vec<String> = running.iter().map(|(_, r)| r.task_id.clone()).collect();
        let ended = match tasks::wait_any(&ids) {
            Ok(id) => id,
            Err(_) => ids[0].clone(),
        };
        let at = running
            .iter()
            .position(|(_, r)| r.task_id == ended)
            .unwrap_or(0);
        let (i, r) = running.swap_remove(at);
        let outcome = run::follow(&r, |_| Ok(()))
            .unwrap_or_else(|e| Outcome::not_started(&r.backend, TaskState::Failed, e.message));
        if !outcome.succeeded() && fail_fast && !stopping {
            stopping = true;
            for (_, other) in &running {
                let _ = tasks::cancel(&other.task_id);
            }
        }
        outcomes[i] = Some(outcome);
    }
    outcomes
        .into_iter()
        .zip(jobs)
        .map(|(o, job)| {
            o.unwrap_or_else(|| {
                Outcome::not_started(
                    &job.backend,
                    TaskState::Cancelled,
                    "not started: an earlier task failed (fail_fast)".into(),
                )
            })
        })
        .collect()
}

fn dry_run_outcome(spec: &PromptSpec) -> Outcome {
    match backends::preview(&spec.backend, &run::prompt_request(spec, None)) {
        Ok(argv) => Outcome {
            output: request::display_command(&argv),
            exit_code: 0,
            error: None,
            ..Outcome::not_started(&spec.backend, TaskState::Done, String::new())
        },
        Err(m) => Outcome::not_started(&spec.backend, TaskState::Failed, m),
    }
}

fn prompt_list(map: &Map<String, Value>, key: &str, max: u64) -> Result<Vec<PromptSpec>, ApiError> {
    let items = Fields::new(map, "")
        .array(key)?
        .ok_or_else(|| ApiError::bad(format!("{key} is required")))?;
    if items.is_empty() || items.len() as u64 > max {
        return Err(ApiError::bad(format!("{key} must hold 1 to {max} items")));
    }
    let specs = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{key}[{i}].");
            let obj = item
                .as_object()
                .ok_or_else(|| ApiError::bad(format!("{key}[{i}] must be an object")))?;
            request::prompt_spec(obj, &at)
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_backends(specs.iter().map(|s| (s.backend.as_str(), !s.dry_run)))?;
    for (i, s) in specs.iter().enumerate() {
        if s.session_id.is_some() {
            return Err(ApiError::bad(format!(
                "{key}[{i}].session_id: these runs are ephemeral and resume no session"
            )));
        }
    }
    Ok(specs)
}

pub fn parallel(map: Map<String, Value>) -> Result<Value, ApiError> {
    let max_tasks = setting_u64("max_parallel_tasks").unwrap_or(100);
    let specs = prompt_list(&map, "tasks", max_tasks)?;
    let f = Fields::new(&map, "");
    let max_parallel = match f.count("max_parallel", 1000)? {
        Some(0) => return Err(ApiError::bad("max_parallel must be at least 1")),
        Some(n) => n as usize,
        None => specs.len(),
    };
    let fail_fast = f.boolean("fail_fast")?;
    let started = run::now_ms();
    let outcomes = run_batch(specs, max_parallel, fail_fast);
    let completed = outcomes.iter().filter(|o| o.succeeded()).count();
    let cancelled = outcomes
        .iter()
        .filter(|o| o.state == TaskState::Cancelled)
        .count();
    Ok(json!({
        "total_tasks": outcomes.len(),
        "completed": completed,
        "failed": outcomes.len() - completed - cancelled,
        "cancelled": cancelled,
        "total_duration_ms": run::now_ms().saturating_sub(started),
        "results": outcomes.iter().map(Outcome::result_json).collect::<Vec<_>>(),
    }))
}

pub fn chain(map: Map<String, Value>) -> Result<Value, ApiError> {
    let max_steps = setting_u64("max_chain_steps").unwrap_or(50);
    let specs = prompt_list(&map, "steps", max_steps)?;
    let f = Fields::new(&map, "");
    let stop_on_failure = f.boolean("stop_on_failure")?;
    let pass_working_dir = f.boolean("pass_working_dir")?;
    let timeout = default_timeout();
    let started = run::now_ms();
    let mut previous = String::new();
    let mut shared: Option<Placement> = None;
    let mut results = Vec::new();
    let mut completed = 0;
    let mut failed_step = 0;
    for (i, mut spec) in specs.into_iter().enumerate() {
        spec.prompt = request::substitute_previous(&spec.prompt, &previous);
        let own_place = spec.workspace_id.is_some() || spec.workdir.is_some();
        let placement = match (&shared, own_place) {
            (Some(p), false) => Ok(Placement {
                created: false,
                ..p.clone()
            }),
            _ => run::place(&spec, Fresh::ForCall)
                .map(|p| p.expect("place creates a workspace when asked")),
        };
        let outcome = placement.and_then(|p| {
            if pass_working_dir && shared.is_none() {
                shared = Some(p.clone());
            }
            let r = run::start(&spec, p, None, timeout)?;
            run::follow(&r, |_| Ok(()))
        });
        let outcome = outcome
            .unwrap_or_else(|e| Outcome::not_started(&spec.backend, TaskState::Failed, e.message));
        let mut v = outcome.result_json();
        v["step"] = (i + 1).into();
        v["name"] = spec
            .name
            .clone()
            .unwrap_or_else(|| format!("step-{}", i + 1))
            .into();
        results.push(v);
        previous = outcome.output.clone();
        if outcome.succeeded() {
            completed += 1;
        } else {
            if failed_step == 0 {
                failed_step = i + 1;
            }
            if stop_on_failure {
                break;
            }
        }
    }
    Ok(json!({
        "total_steps": results.len(),
        "completed_steps": completed,
        "failed_step": failed_step,
        "total_duration_ms": run::now_ms().saturating_sub(started),
        "results": results,
    }))
}

pub fn compare(map: Map<String, Value>) -> Result<Value, ApiError> {
    let f = Fields::new(&map, "");
    let prompt = f.required("prompt")?;
    let names = f.strings("backends")?;
    if names.is_empty() || names.len() > 10 {
        return Err(ApiError::bad("backends must hold 1 to 10 backend names"));
    }
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(ApiError::bad(format!("backend {n} is named twice")));
        }
    }
    let sequential = f.boolean("sequential")?;
    let mut jobs = Vec::new();
    for name in &names {
        let mut one = map.clone();
        one.insert("backend".into(), name.clone().into());
        one.insert("prompt".into(), prompt.clone().into());
        one.remove("session_id");
        jobs.push(request::prompt_spec(&one, "")?);
    }
    check_backends(jobs.iter().map(|j| (j.backend.as_str(), !j.dry_run)))?;
    let started = run::now_ms();
    let parallel = if sequential { 1 } else { jobs.len() };
    let outcomes = run_batch(jobs, parallel, false);
    let results: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            let mut v = o.result_json();
            if let Value::Object(m) = &mut v {
                m.remove("cancelled");
            }
            v
        })
        .collect();
    Ok(json!({
        "prompt": prompt,
        "backends": names,
        "total_duration_ms": run::now_ms().saturating_sub(started),
        "results": results,
    }))
}
