//! The read-only dashboard (`--http-listen`): one page that polls `/api/dashboard` — jobs
//! with progress, rate and ETA, verdicts per second over time, live workers with their
//! tokens per second, and each judge's telemetry — and `/jobs/{id}/report`, a job's
//! self-contained HTML report.
//!
//! A refresher task builds the snapshot every `refresh` from Postgres and Redis, so a page
//! load costs nothing; a job's telemetry (a pass over its stored samples) is counted again
//! only when its done count has moved, at most every six refreshes and every ten times what
//! its last count took. Everything is read
//! from the shared stores, so every coordinator replica shows the same figures.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use uuid::Uuid;
use verdict_report::{render_html, render_judge_section, JudgeKey, Report, Summary};
use verdict_store::{JobState, StoreError};

use crate::app::App;

/// Jobs the dashboard lists (the most recent ones).
const JOBS: i64 = 100;
/// Points of throughput history kept (at the default 5 s refresh: an hour).
const HISTORY: usize = 720;
/// Rates and ETAs are measured over this window.
const RATE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub name: String,
    pub judge: String,
    pub state: &'static str,
    pub k: u32,
    pub total: u64,
    pub done: u64,
    pub queued: u64,
    pub dead: u64,
    pub rejected: u64,
    pub cancelled: u64,
    pub deduplicated: u64,
    /// Verdicts per second over the last two minutes (None until measured).
    pub rate_per_s: Option<f64>,
    /// Seconds until the queued items are done at that rate.
    pub eta_s: Option<f64>,
    pub created_at: String,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Unix seconds.
    pub t: u64,
    pub verdicts_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub id: String,
    pub judge: String,
    pub device: String,
    pub in_flight: u32,
    pub tokens_per_second: f64,
    pub generated_tokens: u64,
    pub seen_s_ago: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct JudgeView {
    pub judge: String,
    pub fingerprint: String,
    /// Jobs whose verdicts these figures cover.
    pub jobs: usize,
    pub summary: Summary,
    /// The figures and charts as an HTML fragment (the report's section for this judge).
    pub html: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Unix seconds; 0 until the first refresh.
    pub generated_at: u64,
    pub refresh_s: f64,
    pub jobs: Vec<JobView>,
    pub throughput: Vec<Point>,
    pub workers: Vec<WorkerView>,
    pub judges: Vec<JudgeView>,
    /// Why the last refresh failed, if it did (the figures are then the previous ones).
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Queue(#[from] verdict_queue::QueueError),
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn state_name(s: JobState) -> &'static str {
    match s {
        JobState::Open => "open",
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Cancelled => "cancelled",
    }
}

/// A job's telemetry as last counted.
struct Counted {
    done: u64,
    at: Instant,
    /// How long counting took: a big job is counted again less often.
    took: Duration,
    report: Report,
}

/// What the refresher remembers between refreshes.
struct Refresher {
    app: App,
    refresh: Duration,
    /// (when, done count per job), oldest first, within the rate window.
    seen: VecDeque<(Instant, HashMap<Uuid, u64>)>,
    last_total: Option<(Instant, u64)>,
    throughput: VecDeque<Point>,
    counted: HashMap<Uuid, Counted>,
}

impl Refresher {
    fn rate(&self, job: Uuid, now: Instant, done: u64) -> Option<f64> {
        let (then, counts) = self.seen.iter().find(|(t, c)| now.duration_since(*t) > Duration::ZERO && c.contains_key(&job))?;
        let dt = now.duration_since(*then).as_secs_f64();
        Some(done.saturating_sub(counts[&job]) as f64 / dt)
    }

    async fn snapshot(&mut self) -> Result<Snapshot, RefreshError> {
        let (now, unix) = (Instant::now(), unix_now());
        let rows = self.app.store.list_jobs(JOBS, None, None).await?;
        let mut jobs = Vec::with_capacity(rows.len());
        let mut done_now = HashMap::new();
        for row in &rows {
            let p = self.app.store.progress(row.id).await?;
            done_now.insert(row.id, p.done);
            let state = row.state(&p);
            let rate = if state == JobState::Running || state == JobState::Open { self.rate(row.id, now, p.done) } else { None };
            let eta_s = rate.filter(|r| *r > 0.0).map(|r| p.queued as f64 / r);
            jobs.push(JobView {
                id: row.id.to_string(),
                name: row.name.clone(),
                judge: row.judge.clone(),
                state: state_name(state),
                k: row.spec.k,
                total: p.total,
                done: p.done,
                queued: p.queued,
                dead: p.dead,
                rejected: p.rejected,
                cancelled: p.cancelled,
                deduplicated: p.deduplicated,
                rate_per_s: rate,
                eta_s,
                created_at: row.created_at.to_rfc3339(),
                note: row.note.clone(),
            });
        }
        // Throughput: verdicts stored across the listed jobs since the last refresh.
        let total: u64 = done_now.values().sum();
        if let Some((then, before)) = self.last_total {
            let dt = now.duration_since(then).as_secs_f64();
            if dt > 0.0 {
                self.throughput.push_back(Point { t: unix, verdicts_per_s: total.saturating_sub(before) as f64 / dt });
                while self.throughput.len() > HISTORY {
                    self.throughput.pop_front();
                }
            }
        }
        self.last_total = Some((now, total));
        self.seen.push_back((now, done_now.clone()));
        while self.seen.front().is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW) {
            self.seen.pop_front();
        }

        // Telemetry: count a job again when it has moved and the last count is old enough:
        // six refreshes, or ten times what counting it took (a pass over a big job's samples
        // must not keep Postgres busy).
        for row in &rows {
            let done = done_now[&row.id];
            let stale = match self.counted.get(&row.id) {
                None => done > 0,
                Some(c) => c.done != done && now.duration_since(c.at) >= (self.refresh * 6).max(c.took * 10),
            };
            if stale {
                let started = Instant::now();
                let report = crate::telemetry::job_report(&self.app.store, row.id).await?;
                self.counted.insert(row.id, Counted { done, at: now, took: started.elapsed(), report });
            }
        }
        self.counted.retain(|id, _| done_now.contains_key(id));
        // Each judge's figures over the listed jobs, and how many jobs they cover.
        let mut all = Report::default();
        let mut jobs_of: BTreeMap<&JudgeKey, usize> = BTreeMap::new();
        for c in self.counted.values() {
            all.merge(&c.report);
            for (key, _) in &c.report.judges {
                *jobs_of.entry(key).or_default() += 1;
            }
        }
        let jobs_of: BTreeMap<JudgeKey, usize> = jobs_of.into_iter().map(|(k, n)| (k.clone(), n)).collect();
        all.judges.sort_by(|a, b| a.0.cmp(&b.0));
        let judges = all
            .judges
            .into_iter()
            .map(|(key, t)| JudgeView { html: render_judge_section(&key, &t), summary: t.summary(), jobs: jobs_of.get(&key).copied().unwrap_or(0), judge: key.judge, fingerprint: key.fingerprint })
            .collect();

        let workers = self
            .app
            .queue
            .workers()
            .await?
            .into_iter()
            .map(|w| WorkerView {
                seen_s_ago: unix.saturating_sub(w.seen_at),
                id: w.id,
                judge: w.judge,
                device: w.device,
                in_flight: w.in_flight,
                tokens_per_second: w.tokens_per_second,
                generated_tokens: w.generated_tokens,
            })
            .collect();
        Ok(Snapshot { generated_at: unix, refresh_s: self.refresh.as_secs_f64(), jobs, throughput: self.throughput.iter().cloned().collect(), workers, judges, error: None })
    }
}

type Current = Arc<RwLock<Snapshot>>;

async fn refresh_loop(mut r: Refresher, current: Current, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(r.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let next = r.snapshot().await;
        let mut cur = current.write().unwrap_or_else(|e| e.into_inner());
        match next {
            Ok(s) => *cur = s,
            Err(e) => {
                tracing::warn!(error = %e, "dashboard refresh failed");
                cur.error = Some(e.to_string());
            }
        }
    }
}

#[derive(Clone)]
struct PageState {
    app: App,
    current: Current,
}

async fn page() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

async fn api(State(app): State<PageState>) -> Response {
    let snap = app.current.read().unwrap_or_else(|e| e.into_inner()).clone();
    match serde_json::to_string(&snap) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn job_report(State(app): State<PageState>, Path(id): Path<String>) -> Response {
    let Ok(job) = Uuid::parse_str(&id) else {
        return (StatusCode::BAD_REQUEST, format!("{id:?} is not a job id")).into_response();
    };
    if let Err(e) = app.app.store.get_job(job).await {
        let code = if matches!(e, StoreError::NotFound(_)) { StatusCode::NOT_FOUND } else { StatusCode::SERVICE_UNAVAILABLE };
        return (code, e.to_string()).into_response();
    }
    match crate::telemetry::job_report(&app.app.store, job).await {
        Ok(report) => Html(render_html(&report)).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Serve the dashboard on `addr` until `stop` turns true; returns the bound address.
pub async fn serve(addr: SocketAddr, refresh: Duration, app: App, stop: tokio::sync::watch::Receiver<bool>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let current: Current = Arc::new(RwLock::new(Snapshot { refresh_s: refresh.as_secs_f64(), ..Default::default() }));
    let refresher = Refresher { app: app.clone(), refresh, seen: VecDeque::new(), last_total: None, throughput: VecDeque::new(), counted: HashMap::new() };
    tokio::spawn(refresh_loop(refresher, current.clone(), stop.clone()));
    let app = axum::Router::new()
        .route("/", get(page))
        .route("/api/dashboard", get(api))
        .route("/jobs/{id}/report", get(job_report))
        .with_state(PageState { app, current });
    let mut stop = stop;
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!(error = %e, "dashboard server stopped");
        }
    });
    Ok(bound)
}
