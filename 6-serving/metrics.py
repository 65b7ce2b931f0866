"""Prometheus metrics of one server (its own registry, so several apps can live in one process).

p50/p95/p99 come from the latency histogram, e.g.
`histogram_quantile(0.99, sum by (le) (rate(musicops_http_request_duration_seconds_bucket[5m])))`;
the cache hit ratio is exported directly and derivable from `musicops_cache_lookups_total`.
Cost per generated minute is priced outside the server (deploy/kustomize/base/monitoring: a
Prometheus recording rule and a Grafana variable hold the price of a replica-hour) over
`musicops_replica_seconds_total` (the time a replica holds its accelerator, busy or not) and
`musicops_generated_audio_seconds_total`; `musicops_generation_seconds_sum` is the busy part.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Up to 30 min: one real-size clip on a CPU takes minutes, and a histogram that stops at 120 s puts
# every such call in +Inf, so p95/p99 would read 120 s whatever happened.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0)
ERROR_CAUSES = ("validation", "unauthenticated", "signature", "rate_limited", "quota_exceeded", "not_found",
                "not_ready", "not_delivered", "generation", "internal", "webhook", "model_load")


class ReplicaSeconds(Collector):
    """`musicops_replica_seconds_total`: seconds since this server started (monotonic clock), read at
    each scrape; rate() of it summed over replicas is the replica-seconds billed per second."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("musicops_replica_seconds",
                                  "Seconds this replica has been up (billable compute time, busy or idle).",
                                  value=time.monotonic() - self.started)


class CostPerMinute(Collector):
    """`musicops_cost_per_generated_minute`: this replica's price (MUSICOPS_PRICE_PER_HOUR) times its
    up-time, per minute of audio it generated since start, read at each scrape (0 before any audio);
    `..._busy` prices only decode time. The fleet-wide figure is the recording rule in deploy/."""

    def __init__(self, price_per_hour: float, replica: ReplicaSeconds, audio: Counter, busy: Histogram) -> None:
        self.price_per_hour, self.replica, self.audio, self.busy = price_per_hour, replica, audio, busy

    def collect(self) -> Iterator[Metric]:
        minutes = _sum_samples(self.audio, "_total") / 60.0
        busy_s = _sum_samples(self.busy, "_sum")
        up_s = time.monotonic() - self.replica.started
        for name, seconds, what in (("musicops_cost_per_generated_minute", up_s, "up-time (busy or idle)"),
                                    ("musicops_cost_per_generated_minute_busy", busy_s, "decode time only")):
            value = self.price_per_hour * seconds / 3600.0 / minutes if minutes else 0.0
            yield GaugeMetricFamily(name, f"Price of this replica's {what} per generated minute of audio since start.",
                                    value=value)
        yield GaugeMetricFamily("musicops_price_per_hour", "The replica-hour price the cost series use "
                                "(MUSICOPS_PRICE_PER_HOUR).", value=self.price_per_hour)


def _sum_samples(metric: Counter | Histogram, suffix: str) -> float:
    """A counter's total or a histogram's sum over every label set, through the public collect()."""
    return sum(sample.value for family in metric.collect() for sample in family.samples
               if sample.name.endswith(suffix))


class AcceleratorMemory(Collector):
    """`musicops_gpu_memory_allocated_bytes` / `..._reserved_bytes` per CUDA device, when torch runs on one
    (nothing on a CPU-only replica; torch is not imported for it)."""

    def collect(self) -> Iterator[Metric]:
        import sys

        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available():
            return
        allocated = GaugeMetricFamily("musicops_gpu_memory_allocated_bytes", "CUDA memory held by tensors.",
                                      labels=("device",))
        reserved = GaugeMetricFamily("musicops_gpu_memory_reserved_bytes", "CUDA memory reserved by torch's "
                                     "caching allocator.", labels=("device",))
        for index in range(torch.cuda.device_count()):
            allocated.add_metric((str(index),), float(torch.cuda.memory_allocated(index)))
            reserved.add_metric((str(index),), float(torch.cuda.memory_reserved(index)))
        yield allocated
        yield reserved


class ServerMetrics:
    def __init__(self, price_per_hour: float = 0.0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # process_cpu_seconds_total, process_resident_memory_bytes, open fds, ... (Linux /proc)
        ProcessCollector(registry=r)
        r.register(AcceleratorMemory())
        self.request_latency = Histogram(
            "musicops_http_request_duration_seconds", "HTTP request latency by route template and status.",
            ("method", "route", "status"), buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("musicops_queue_depth", "Work waiting for the model.", ("queue",), registry=r)
        self.cache_lookups = Counter("musicops_cache_lookups_total", "Asset cache lookups by result.",
                                     ("result",), registry=r)
        self.cache_hit_ratio = Gauge("musicops_cache_hit_ratio", "Cache hits / lookups since start.", registry=r)
        self.generation_seconds = Histogram(
            "musicops_generation_seconds",
            "Seconds per decode run (continuous batching: from the first clip joining an idle model to the "
            "batch draining; one dynamic batch before).", ("model_version",), buckets=LATENCY_BUCKETS, registry=r)
        self.generated_audio_seconds = Counter("musicops_generated_audio_seconds_total",
                                               "Seconds of audio generated (cache misses).", registry=r)
        self.batch_size = Histogram("musicops_batch_size", "Clips per decode run (see musicops_generation_seconds).",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        # continuous batching: clips in flight now and at most (bounded by --max-batch-size), steps run
        self.decode_rows = Gauge("musicops_decode_rows_in_flight", "Clips decoding in the model now.", registry=r)
        self.decode_rows_peak = Gauge("musicops_decode_rows_in_flight_peak",
                                      "Most clips ever decoding together in one step.", registry=r)
        self.decode_steps = Counter("musicops_decode_steps_total", "Decoder steps run.", registry=r)
        self.decode_row_steps = Counter("musicops_decode_row_steps_total",
                                        "Clip-steps decoded (sum over steps of clips in the step).", registry=r)
        self.decode_kv_bytes = Gauge("musicops_decode_kv_bytes", "Bytes held by the decoder's KV slots.", registry=r)
        # streaming (/v1/generate/stream, /v1/stream/ws)
        self.stream_ttfa = Histogram("musicops_stream_time_to_first_audio_seconds",
                                     "From a stream's start (request or segment queued) to its first audio bytes sent.",
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.stream_first_audio_fraction = Histogram(
            "musicops_stream_first_audio_decoded_fraction",
            "Fraction of a streamed clip's frames decoded when its first audio was sent (< 1: audio before the "
            "clip was done).", buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 0.9, 1.0), registry=r)
        self.stream_jitter = Histogram("musicops_stream_chunk_jitter_seconds",
                                       "|inter-arrival time of a chunk - that of the chunk before| per stream.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.stream_underruns = Counter("musicops_stream_underruns_total",
                                        "Chunks sent after the audio already sent would have finished playing "
                                        "in real time.", registry=r)
        self.streams = Counter("musicops_streams_total", "Streams by endpoint and result.", ("endpoint", "result"),
                               registry=r)
        self.errors = Counter("musicops_errors_total", "Errors by cause.", ("cause",), registry=r)
        self.jobs = Counter("musicops_jobs_total", "Job state transitions.", ("state",), registry=r)
        self.model_info = Gauge("musicops_model_info", "The model in service (value 1).",
                                ("name", "version", "uri"), registry=r)
        self.model_swaps = Counter("musicops_model_swaps_total", "Model hot swaps.", registry=r)
        replica = ReplicaSeconds()
        r.register(replica)
        r.register(CostPerMinute(price_per_hour, replica, self.generated_audio_seconds, self.generation_seconds))
        for cause in ERROR_CAUSES:
            self.errors.labels(cause)
        for result in ("hit", "miss"):
            self.cache_lookups.labels(result)
        self._hits = 0
        self._lookups = 0
        self._decode_peak = 0

    def cache(self, hits: int, misses: int) -> None:
        if hits:
            self.cache_lookups.labels("hit").inc(hits)
        if misses:
            self.cache_lookups.labels("miss").inc(misses)
        self._hits += hits
        self._lookups += hits + misses
        if self._lookups:
            self.cache_hit_ratio.set(self._hits / self._lookups)

    def decode_step(self, rows: int, in_flight: int, peak: int, kv_bytes: int) -> None:
        """One continuous-batching step: `rows` clips decoded, `in_flight` still in the batch."""
        if rows:
            self.decode_steps.inc()
            self.decode_row_steps.inc(rows)
        self.decode_rows.set(in_flight)
        self._decode_peak = max(self._decode_peak, peak)  # the model batch is rebuilt on a hot swap
        self.decode_rows_peak.set(self._decode_peak)
        self.decode_kv_bytes.set(kv_bytes)

    def stream_first_audio(self, seconds: float, decoded_fraction: float | None) -> None:
        self.stream_ttfa.observe(seconds)
        if decoded_fraction is not None:
            self.stream_first_audio_fraction.observe(decoded_fraction)

    def error(self, cause: str) -> None:
        self.errors.labels(cause).inc()

    def track_queue(self, name: str, depth: Callable[[], float]) -> None:
        self.queue_depth.labels(name).set_function(depth)

    def serving(self, name: str, version: str | None, uri: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version or "", uri).set(1)
