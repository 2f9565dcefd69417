// Metrics for Prometheus: what the engine does, as counters, gauges and
// histograms under the prefix wanbatch_ (docs/OPERATIONS.md, "Metrics").
//
// Two halves. `EngineMetrics` is fed on the daemon's loop thread: by the
// engine's event stream (a sink) and by `tick()`, a snapshot of the shot book
// at most once a second plus, after a start, a census of the stored shots a
// slice at a time (for the HELD count over every batch, finished or not).
// `MetricsServer` serves the registry over HTTP from a thread of its own
// (daemon/metrics_http.h), so a scrape never waits on the loop and the loop
// never waits on a scrape; the metric objects are thread-safe.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "daemon/metrics_http.h"
#include "jobs/engine/events.h"
#include "jobs/engine/scheduler.h"
#include "jobs/engine/stuck.h"
#include "jobs/store.h"
#include "jobs/util.h"

namespace prometheus {
class Registry;
class Gauge;
class Counter;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace wb {

// The label for why a shot waits, from its reason text ("waiting: ..."):
// paused, window, rate_limited, key_refused, balance_read, credits, in_flight,
// provider_queue, batch_budget, daily_budget, request_budget, submit_rate,
// output_write, or other. A small fixed set, so a label never carries text.
std::string wait_label(const std::string& reason);

// "2xx", "4xx", ...; "error" for no HTTP answer (status 0).
std::string status_class(long http_status);

class EngineMetrics {
 public:
  // `mono` times the gaps between polls (detection delay); `wall` stamps batch progress.
  EngineMetrics(MonoFn mono, NowFn wall);
  ~EngineMetrics();
  EngineMetrics(const EngineMetrics&) = delete;
  EngineMetrics& operator=(const EngineMetrics&) = delete;

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  // The event sink: scheduler.events().subscribe([&m](const Event& e) { m.on_event(e); }).
  void on_event(const Event& e);

  // Starts counting the stored shots (HELD ones over every batch). Call before
  // the scheduler loads, with the sink subscribed: the changes seen from here
  // on are added to the census.
  void start_census(const Store& store);

  // The snapshot: shots by state, unfinished batches, shots waiting by reason,
  // each batch's last progress; and a slice of the census while it runs.
  // Returns how soon it wants to run again.
  Millis tick(const Scheduler& scheduler);

  // A webhook delivery dropped for a full outbox (daemon/notifier.h).
  void notification_dropped();

  // The text exposition of the registry (what /metrics serves).
  std::string text() const;

 private:
  struct Poll {
    std::optional<MonoPoint> accepted;  // the submit answer that started following it
    std::optional<MonoPoint> previous;  // the status answer before the last one
    std::optional<MonoPoint> last;      // the last status answer
  };
  // Seen COMPLETED, its result not yet read: how long the completion went unseen.
  struct Seen {
    std::optional<double> gap_s;         // since the last poll that saw it unfinished
    std::optional<double> since_submit_s;
  };
  void on_shot(const Event& e);
  void on_completed(const Event& e);
  void set_held();
  void progress(const std::string& batch);

  MonoFn mono_;
  NowFn wall_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>* shots_;
  prometheus::Family<prometheus::Gauge>* waiting_;
  prometheus::Family<prometheus::Gauge>* progress_;
  prometheus::Gauge* held_ = nullptr;  // once the census is done
  prometheus::Gauge* batches_;
  prometheus::Gauge* stuck_;
  prometheus::Family<prometheus::Gauge>* balance_family_;
  prometheus::Gauge* balance_ = nullptr;  // once read
  prometheus::Family<prometheus::Counter>* submits_;
  prometheus::Family<prometheus::Counter>* ended_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Counter>* rate_limited_;
  prometheus::Family<prometheus::Counter>* limits_;
  prometheus::Counter* spent_;
  prometheus::Counter* notify_dropped_;
  prometheus::Family<prometheus::Histogram>* render_;
  prometheus::Family<prometheus::Histogram>* delay_;

  std::map<std::string, Poll> polls_;  // by shot key, while IN_FLIGHT
  std::map<std::string, Seen> seen_;   // by shot key, FETCHING after IN_FLIGHT
  std::map<std::string, prometheus::Gauge*> batch_progress_;
  std::map<std::string, prometheus::Gauge*> waiting_by_label_;
  std::unique_ptr<ShotCensus> census_;
  int64_t held_delta_ = 0;  // HELD changes seen since the census snapshot
  int64_t held_counted_ = 0;
  bool census_done_ = false;
  std::optional<MonoPoint> last_snapshot_, last_walk_;
};

// The HTTP endpoint: GET http://<listen>/metrics, served by one epoll thread
// (daemon/metrics_http.h): a request head must arrive whole within 2 s of its
// accept however it trickles, and at most 128 connections are open (a new one
// drops the oldest still sending), so silent or trickling clients (slowloris)
// never keep a scrape out.
// Throws wb::Error when it cannot listen (address in use, not an address of
// this host).
class MetricsServer {
 public:
  MetricsServer(const std::string& listen, const std::shared_ptr<prometheus::Registry>& registry);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  // http://host:port/metrics, with the port it listens on (also when 0 was asked).
  const std::string& url() const { return url_; }

 private:
  std::unique_ptr<MetricsHttpServer> server_;
  std::string url_;
};

// The daemon's metrics: the engine's, served at `listen` (not served when "").
// An endpoint that cannot listen (the port taken) is logged as an error and
// the daemon serves on without it: rendering never stops for metrics.
class DaemonMetrics {
 public:
  DaemonMetrics(const std::string& listen, Scheduler& scheduler, MonoFn mono, NowFn wall);
  // Starts the census of the stored shots: once loading is done, before the loop.
  void start(const Store& store) { engine_.start_census(store); }
  // On every turn of the loop; returns how soon it wants the next.
  Millis tick() { return engine_.tick(scheduler_); }
  void notification_dropped() { engine_.notification_dropped(); }

 private:
  Scheduler& scheduler_;
  EngineMetrics engine_;
  std::unique_ptr<MetricsServer> server_;
};

}  // namespace wb
