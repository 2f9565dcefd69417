#include "daemon/commands.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>

#include "daemon/control.h"
#include "daemon/daemon.h"
#include "jobs/credits.h"
#include "jobs/curl_transport.h"
#include "jobs/manifest.h"
#include "jobs/segmind.h"
#include "jobs/engine/requests.h"
#include "jobs/engine/spend.h"
#include "jobs/throttle.h"
#include "jobs/store.h"
#include "jobs/util.h"

namespace wb {

ManifestRules manifest_rules(const Config& c) {
  ManifestRules r;
  r.input_roots = c.input_roots;
  r.max_shots = c.limits.max_shots_per_manifest;
  r.max_bytes = c.limits.max_manifest_bytes;
  r.max_media_bytes = c.limits.max_media_bytes;
  return r;
}

int cmd_validate(const Config& config, bool config_found, const std::vector<std::string>& files, std::ostream& out,
                 std::ostream& err) {
  ManifestRules rules = manifest_rules(config);
  if (!config_found) rules.input_roots = {"/"};  // no roots to confine media to: existence and content only
  int bad = 0;
  for (const auto& f : files) {
    ManifestResult r = load_manifest(f, rules);
    if (r.manifest) {
      out << f << ": ok, batch " << r.manifest->batch << ", " << r.manifest->shots.size() << " shots\n";
    } else {
      ++bad;
      err << format_problems(f, r.problems);
    }
  }
  if (config_found)
    out << "local media checked: they exist, and lie under input_roots of " << config.path << "\n";
  else
    out << "local media checked: they exist; NOT checked against input_roots (no daemon config at " << config.path
        << "; give one with --config)\n";
  return bad ? 1 : 0;
}

int cmd_submit(const Config& config, const std::vector<std::string>& files, std::ostream& out,
               std::ostream& err) {
  struct Ready {
    std::string file;
    std::string text;
    std::string name;
  };
  std::vector<Ready> ready;
  bool ok = true;
  for (const auto& f : files) {
    ManifestResult r = load_manifest(f, manifest_rules(config));
    if (!r.manifest) {
      err << format_problems(f, r.problems);
      ok = false;
      continue;
    }
    std::string text = read_file(f, static_cast<uint64_t>(config.limits.max_manifest_bytes));
    if (!r.manifest->base_dir_given) text = with_base_dir(text, r.manifest->base_dir);
    std::string name = basename_of(f);
    if (name.size() < 5 || (name.substr(name.size() - 5) != ".yaml" && name.substr(name.size() - 4) != ".yml"))
      name += ".yaml";
    ready.push_back({f, text, name});
  }
  if (!ok) {
    err << "nothing was submitted\n";
    return 1;
  }
  if (!is_dir(config.spool.incoming)) {
    err << "spool.incoming " << config.spool.incoming << " does not exist\n";
    return 1;
  }
  int failures = 0;
  for (const auto& r : ready) {
    // Write under a dot-name the watcher ignores, then rename without replacing.
    std::string tmp = join_path(config.spool.incoming, "." + r.name + ".submit-" + std::to_string(::getpid()));
    std::string target = join_path(config.spool.incoming, r.name);
    try {
      write_file_atomic(config.spool.incoming, basename_of(tmp), r.text);
      if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) != 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        throw Error(e == EEXIST ? "a manifest named " + r.name + " is already waiting in " + config.spool.incoming
                                : "cannot rename into the spool: " + std::string(std::strerror(e)));
      }
      out << r.file << ": submitted as " << target << "\n";
    } catch (const Error& e) {
      err << r.file << ": " << e.what() << "\n";
      ++failures;
    }
  }
  return failures ? 1 : 0;
}

int cmd_control(const Config& config, const std::string& command, const std::string& target,
                std::ostream& out, std::ostream& err, bool yes, bool abandon) {
  nlohmann::json answer;
  try {
    nlohmann::json request = {{"command", command}, {"target", target}, {"yes", yes}};
    if (abandon) request["abandon"] = true;
    answer = control_request(config.state_dir, request);
  } catch (const Error& e) {
    err << e.what() << "\n";
    return 1;
  }
  if (!answer.value("ok", false)) {
    err << command << ": " << answer.value("error", "refused") << "\n";
    return 1;
  }
  if (command == "pause" || command == "resume") {
    out << (answer.value("paused", false) ? "submits paused; polls and downloads go on\n" : "submits resumed\n");
    return 0;
  }
  auto changed = answer.value("changed", std::vector<std::string>{});
  out << command << ": " << changed.size() << " shot(s)";
  for (const auto& id : changed) out << " " << id;
  out << "\n";
  for (const auto& what : answer.value("plan", std::vector<std::string>{})) out << "  " << what << "\n";
  for (const auto& why : answer.value("skipped", std::vector<std::string>{})) out << "  left alone: " << why << "\n";
  // A plain cancel kept a paid take running (it never abandons one): exit 3, so a
  // script sees that the shot has not ended.
  if (command == "cancel" && !answer.value("kept_paid", std::vector<std::string>{}).empty()) return 3;
  return 0;
}

int cmd_adopt(const Config& config, const std::string& target, const std::string& request_id, std::ostream& out,
              std::ostream& err) {
  nlohmann::json answer;
  try {
    answer = control_request(config.state_dir, {{"command", "adopt"}, {"target", target}, {"request_id", request_id}});
  } catch (const Error& e) {
    err << e.what() << "\n";
    return 1;
  }
  if (!answer.value("ok", false)) {
    err << "adopt: " << answer.value("error", "refused") << "\n";
    return 1;
  }
  for (const auto& what : answer.value("plan", std::vector<std::string>{})) out << "adopt: " << what << "\n";
  return 0;
}

int cmd_estimate(const Config& config, const std::vector<std::string>& files, std::ostream& out,
                 std::ostream& err) {
  // The same money arithmetic as the daemon's submit gate (jobs/engine/spend.h):
  // observed costs and today's spend from the store, when there is one.
  Spend spend(config.limits, config.pricing);
  const std::string today = local_day(std::chrono::system_clock::now());
  try {
    auto store = Store::open(join_path(config.state_dir, "db"), Store::Mode::read_only);
    if (store->meta("index_version")) {
      if (auto costs = store->meta("cost_model")) spend.costs().load(*costs);
      spend.set_day_spent(today, store->spent_on(today));
    } else {  // a store no daemon of this version has opened yet: its records
      Micro spent_today = 0;
      for (const auto& s : store->all_shots()) {
        if (!s.cost) continue;
        spend.costs().observe(s.spec, *s.cost);
        if (s.completed_ms && local_day(from_epoch_ms(s.completed_ms)) == today) spent_today += to_micro(*s.cost);
      }
      spend.set_day_spent(today, spent_today);
    }
  } catch (const Error&) {
    // No state yet: the price table alone.
  }
  try {
    ApiRequests api(config.api, load_api_key(config.api));
    CurlTransport transport(config.api.allow_loopback_http);
    std::optional<HttpResponse> answer;
    transport.start(api.credits(), [&](HttpResponse r) { answer = std::move(r); });
    // The request carries the configured timeouts; this bounds the wait besides.
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(
                        (config.api.request_timeout_seconds + config.api.connect_timeout_seconds) * 1000 + 1000));
    while (!answer && std::chrono::steady_clock::now() < deadline) transport.perform(Millis(10), {});
    std::optional<double> balance = answer ? parse_credits(*answer) : std::nullopt;
    if (balance) spend.set_balance(*balance);
    else err << "could not read the credit balance" << (answer ? ": " + error_message(*answer) : "") << "\n";
  } catch (const Error& e) {
    err << "credit balance unknown: " << e.what() << "\n";
  }
  bool covered = true;
  Micro total = 0;
  for (const auto& f : files) {
    ManifestResult r = load_manifest(f, manifest_rules(config));
    if (!r.manifest) {
      err << format_problems(f, r.problems);
      return 2;
    }
    Micro sum = 0;
    std::map<std::string, int> seconds;
    for (const auto& shot : r.manifest->shots) {
      sum += spend.costs().estimate(shot);
      seconds[shot.resolution] += shot.duration;
    }
    total += sum;
    out << f << ": batch " << r.manifest->batch << ", " << r.manifest->shots.size() << " shots, ~"
        << credits_text(sum) << " credits";
    for (auto& [res, secs] : seconds)
      out << ", " << res << " " << secs << " s at " << credits_text(to_micro(spend.costs().per_second(res))) << "/s";
    out << "\n";
    if (r.manifest->budget_credits) {
      bool ok = Spend::batch_budget_gate(r.manifest->budget_credits, 0, sum).empty();
      covered &= ok;
      out << "  budget_credits " << credits_text(to_micro(*r.manifest->budget_credits))
          << (ok ? ": covers it\n" : ": does NOT cover it (shots beyond it will wait)\n");
    }
  }
  if (config.limits.daily_budget_credits > 0) {
    bool ok = spend.daily_gate(today, total).empty();
    covered &= ok;
    out << "daily budget " << credits_text(to_micro(config.limits.daily_budget_credits)) << ", "
        << credits_text(to_micro(config.limits.daily_budget_credits) - spend.spent_on(today))
        << " left today: " << (ok ? "covers it\n" : "does NOT cover it\n");
  }
  if (spend.balance()) {
    bool ok = spend.balance_gate(total).empty();
    covered &= ok;
    out << "balance " << credits_text(to_micro(*spend.balance())) << " (less the reserve "
        << credits_text(to_micro(config.limits.credit_reserve)) << "): "
        << (ok ? "covers it\n" : "does NOT cover it\n");
  }
  return covered ? 0 : 1;
}

}  // namespace wb
