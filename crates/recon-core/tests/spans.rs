//! The runner's tracing spans carry the run and step fields, counters included.
//!
//! This is its own test binary with one test and a global subscriber: tracing caches per
//! callsite whether any subscriber is interested, and in a binary where other tests run on
//! other threads without a subscriber, a scoped one can miss spans. Here nothing races.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use recon_core::{
    Counter, ManualClock, Reconciler, Result, RunContext, Runner, StepReport, async_trait,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[derive(Default)]
struct Recorded {
    next: u64,
    spans: HashMap<u64, (String, HashMap<String, String>)>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Recorded>>);

struct Fields<'a>(&'a mut HashMap<String, String>);
impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut r = self.0.lock().unwrap();
        r.next += 1;
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let id = r.next;
        r.spans
            .insert(id, (attrs.metadata().name().to_owned(), fields));
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut r = self.0.lock().unwrap();
        if let Some((_, fields)) = r.spans.get_mut(&span.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// A step that reports fixed counters.
struct Step(&'static str, Vec<(&'static str, u64)>);

#[async_trait]
impl Reconciler for Step {
    fn name(&self) -> &str {
        self.0
    }
    async fn reconcile(&self, _ctx: &RunContext) -> Result<StepReport> {
        let mut r = StepReport::new(self.0);
        for &(name, n) in &self.1 {
            r.add(Counter::new(name), n);
        }
        Ok(r)
    }
}

#[test]
fn run_and_step_spans_carry_counters() {
    let recorder = Recorder::default();
    tracing::subscriber::set_global_default(recorder.clone()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let t0 = "2024-01-24T12:00:00Z".parse().unwrap();
    rt.block_on(async {
        Runner::builder("startup")
            .time_source(Arc::new(ManualClock::at(t0)))
            .step(Step(
                "lease-repair",
                vec![("leases_repaired", 2), ("jobs_requeued", 1)],
            ))
            .step(Step(
                "queue-rehydrate",
                vec![("jobs_requeued", 4), ("pending_orders", 7)],
            ))
            .build()
            .unwrap()
            .run()
            .await;
    });
    let rec = recorder.0.lock().unwrap();
    let by_name = |n: &str| {
        rec.spans
            .values()
            .find(|(name, _)| name == n)
            .map(|(_, f)| f.clone())
            .unwrap_or_else(|| panic!("no span {n}"))
    };
    let run = by_name("recon.run");
    assert_eq!(run["runner"], "startup");
    assert_eq!(run["status"], "success");
    assert!(run["run_id"].starts_with("20240124T120000Z-"));
    // the run's totals: counters of every step, summed by name, in first-seen order
    assert_eq!(
        run["counters"],
        "leases_repaired=2 jobs_requeued=5 pending_orders=7"
    );
    let steps: Vec<_> = rec
        .spans
        .values()
        .filter(|(name, _)| name == "recon.step")
        .map(|(_, f)| f.clone())
        .collect();
    assert_eq!(steps.len(), 2);
    let step = steps.iter().find(|f| f["step"] == "lease-repair").unwrap();
    assert_eq!(step["counters"], "leases_repaired=2 jobs_requeued=1");
    // spelled like the run's status and the JSON report
    assert_eq!(step["status"], "succeeded");
}
