//! `GET /metrics`: the S3 requests' figures and the engine's, in the Prometheus text
//! exposition format 0.0.4 (every family with its HELP and TYPE lines, names prefixed
//! `tessera_`, histograms with cumulative `le` buckets ending in `+Inf`).

use std::fmt::{Display, Write};

use http::{Response, StatusCode};
use tessera_engine::{AsyncEngine, Stats};
use tessera_wal::{HISTOGRAM_BUCKETS, histogram_bucket_bound};

use super::requests::{LATENCY_BUCKET_BOUNDS_US, OperationFigures, RequestMetrics};
use super::{AdminBody, whole};

/// The content type of the text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders the figures now.
pub(super) fn render(engine: &AsyncEngine, requests: &RequestMetrics) -> Response<AdminBody> {
    let mut out = Exposition::default();
    request_families(&mut out, &requests.snapshot());
    let engine = engine.engine();
    engine_families(&mut out, &engine.stats(), engine.poisoned().is_some());
    whole(StatusCode::OK, CONTENT_TYPE, out.text)
}

fn request_families(
    out: &mut Exposition,
    operations: &std::collections::BTreeMap<String, OperationFigures>,
) {
    let name = "tessera_s3_requests_total";
    out.family(
        name,
        "counter",
        "S3 requests by operation (s3s's name; \"unknown\" if refused before one was resolved, \
         as for a bad signature) and HTTP status (\"none\" if no response was written).",
    );
    for (operation, figures) in operations {
        for (status, count) in &figures.by_status {
            out.sample(name, &[("operation", operation), ("status", status)], count);
        }
    }
    let name = "tessera_s3_request_duration_seconds";
    out.family(
        name,
        "histogram",
        "S3 request latency by operation, from the request's arrival to the response's head.",
    );
    for (operation, figures) in operations {
        let mut buckets: Vec<(String, u64)> = LATENCY_BUCKET_BOUNDS_US
            .iter()
            .zip(&figures.latency_buckets)
            .map(|(&bound_us, &count)| (seconds_of_micros(bound_us), count))
            .collect();
        let above = figures.latency_buckets.last().copied().unwrap_or(0);
        buckets.push(("+Inf".to_owned(), above));
        out.histogram(
            name,
            &[("operation", operation)],
            &buckets,
            figures.latency_sum.as_secs_f64(),
        );
    }
}

fn engine_families(out: &mut Exposition, stats: &Stats, poisoned: bool) {
    let gauges: [(&str, &str, u64); 11] = [
        ("tessera_buckets", "Buckets.", stats.buckets),
        ("tessera_uploads_live", "Multipart uploads in progress.", stats.live_uploads),
        ("tessera_upload_parts", "Parts of the uploads in progress.", stats.parts),
        ("tessera_objects", "Objects.", stats.objects),
        (
            "tessera_payload_live_bytes",
            "Payload-store bytes that live parts and objects use.",
            stats.payload_live_bytes,
        ),
        (
            "tessera_payload_dead_bytes",
            "Payload-store bytes no live part or object uses (compaction reclaims them).",
            stats.payload_dead_bytes,
        ),
        ("tessera_payload_segments", "Payload-store segment files.", stats.payload_segments),
        (
            "tessera_wal_bytes_since_checkpoint",
            "Record bytes logged since the last checkpoint.",
            stats.wal_bytes_since_checkpoint,
        ),
        ("tessera_checkpoint_lsn", "The newest checkpoint's LSN (0: none).", stats.checkpoint_lsn),
        ("tessera_applied_lsn", "The last LSN applied (durable and visible).", stats.applied_lsn),
        (
            "tessera_engine_poisoned",
            "1 if a failed write or fsync poisoned the log (writes fail until a restart).",
            u64::from(poisoned),
        ),
    ];
    for (name, help, value) in gauges {
        out.family(name, "gauge", help);
        out.sample(name, &[], value);
    }
    let wal = &stats.wal;
    let counters: [(&str, &str, u64); 6] = [
        (
            "tessera_wal_record_bytes_total",
            "Record bytes logged since the server started.",
            stats.wal_bytes,
        ),
        (
            "tessera_wal_frame_bytes_total",
            "Frame bytes written to the log since the server started.",
            wal.bytes,
        ),
        (
            "tessera_wal_batches_total",
            "Group-commit batches written since the server started (one write and one \
             fdatasync each).",
            wal.batches,
        ),
        ("tessera_wal_records_total", "Records in those batches.", wal.records),
        (
            "tessera_checkpoints_total",
            "Checkpoints written since the server started.",
            stats.checkpoints,
        ),
        (
            "tessera_expired_uploads_total",
            "Uploads expired (TTL or lifecycle rule) since the server started.",
            stats.expired_uploads,
        ),
    ];
    for (name, help, value) in counters {
        out.family(name, "counter", help);
        out.sample(name, &[], value);
    }
    let name = "tessera_wal_batch_records";
    out.family(name, "histogram", "Records per group-commit batch.");
    // Bucket i counts record counts below 2^i, integers: at most 2^i - 1.
    let buckets = log2_buckets(&wal.batch_records_histogram, |bound| (bound - 1).to_string());
    out.histogram(name, &[], &buckets, wal.records);

    let name = "tessera_wal_fsync_duration_seconds";
    out.family(name, "histogram", "Time of the log batches' fdatasyncs.");
    // Bucket i counts syncs of fewer than 2^i whole microseconds: all shorter than 2^i us.
    let buckets = log2_buckets(&wal.sync_us_histogram, seconds_of_micros);
    out.histogram(name, &[], &buckets, wal.sync_time.as_secs_f64());
    let name = "tessera_wal_fsync_max_seconds";
    out.family(name, "gauge", "The longest fdatasync of the log since the server started.");
    out.sample(name, &[], wal.sync_time_max.as_secs_f64());
}

/// The `le` bounds and (not yet cumulative) counts of a log2 histogram of the log's
/// statistics; `le_of` turns a bucket's exclusive bound into its inclusive `le` label.
fn log2_buckets(
    histogram: &[u64; HISTOGRAM_BUCKETS],
    le_of: impl Fn(u64) -> String,
) -> Vec<(String, u64)> {
    let mut buckets: Vec<(String, u64)> = histogram
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let le = histogram_bucket_bound(i).map_or_else(|| "+Inf".to_owned(), &le_of);
            (le, count)
        })
        .collect();
    if buckets.last().is_none_or(|(le, _)| le != "+Inf") {
        buckets.push(("+Inf".to_owned(), 0));
    }
    buckets
}

/// Microseconds as exact decimal seconds ("0.0025", "60").
fn seconds_of_micros(us: u64) -> String {
    let text = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The text being written.
#[derive(Debug, Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let value = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.text, "{label}=\"{value}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A histogram's samples: `buckets` are (`le`, count in that bucket alone), the last one
    /// `+Inf`; they are written cumulative, and `_count` is the `+Inf` bucket's.
    fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        buckets: &[(String, u64)],
        sum: impl Display,
    ) {
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (le, count) in buckets {
            cumulative = cumulative.saturating_add(*count);
            let mut with_le = labels.to_vec();
            with_le.push(("le", le));
            self.sample(&bucket_name, &with_le, cumulative);
        }
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, cumulative);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microseconds_read_as_exact_seconds() {
        assert_eq!(seconds_of_micros(1), "0.000001");
        assert_eq!(seconds_of_micros(2_500), "0.0025");
        assert_eq!(seconds_of_micros(60_000_000), "60");
        assert_eq!(seconds_of_micros(1 << 26), "67.108864");
    }

    #[test]
    fn log2_histograms_become_cumulative_buckets_ending_in_inf() {
        let mut histogram = [0u64; HISTOGRAM_BUCKETS];
        histogram[1] = 3; // ones
        histogram[3] = 2; // 4..=7
        histogram[HISTOGRAM_BUCKETS - 1] = 1; // the open-ended last bucket
        let buckets = log2_buckets(&histogram, |bound| (bound - 1).to_string());
        assert_eq!(buckets.len(), HISTOGRAM_BUCKETS);
        assert_eq!(buckets[0], ("0".to_owned(), 0));
        assert_eq!(buckets[1], ("1".to_owned(), 3));
        assert_eq!(buckets[3], ("7".to_owned(), 2));
        assert_eq!(buckets[HISTOGRAM_BUCKETS - 1], ("+Inf".to_owned(), 1));

        let mut out = Exposition::default();
        out.histogram("h", &[("a", "x\"y")], &buckets, 42);
        let lines: Vec<&str> = out.text.lines().collect();
        assert_eq!(lines[1], "h_bucket{a=\"x\\\"y\",le=\"1\"} 3");
        assert_eq!(lines[3], "h_bucket{a=\"x\\\"y\",le=\"7\"} 5");
        assert_eq!(lines[HISTOGRAM_BUCKETS - 1], "h_bucket{a=\"x\\\"y\",le=\"+Inf\"} 6");
        assert_eq!(lines[HISTOGRAM_BUCKETS], "h_sum{a=\"x\\\"y\"} 42");
        assert_eq!(lines[HISTOGRAM_BUCKETS + 1], "h_count{a=\"x\\\"y\"} 6");
    }
}
