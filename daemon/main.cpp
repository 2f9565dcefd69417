// wanbatch: renders batches of image-to-video shots on Segmind's Wan 2.7 API.
// main() only parses the command line; everything else lives in wanbatch_core.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>

#include "config/config.h"
#include "daemon/commands.h"
#include "daemon/daemon.h"
#include "daemon/journal_log.h"
#include "daemon/rehearse.h"
#include "daemon/version.h"
#include "jobs/util.h"

int main(int argc, char** argv) {
  CLI::App app{
      "wanbatch: renders YAML shot lists as videos on Segmind's Wan 2.7 image-to-video API.\n"
      "Drop manifests into the spool (or use `wanbatch submit`); the daemon submits every shot,\n"
      "follows it, downloads and checks each MP4 and writes a report per batch.\n"
      "Docs: docs/MANIFEST.md, docs/CONFIG.md, docs/ARCHITECTURE.md."};
  app.footer(
      "Global options (--config, --version, --help) go before or after the subcommand.\n"
      "Exit codes: 0 success (validate: every manifest valid); 1 problems found or the command failed;\n"
      "2 usage or config error; 130, 143 rehearse stopped by SIGINT, SIGTERM; 3 cancel left a paid take running.");
  app.require_subcommand(1);
  app.fallthrough();  // a subcommand hands options it does not know (--config) to the app
  std::string config_path = wb::default_config_path();
  auto* config_option = app.add_option(
      "-c,--config", config_path, "daemon config file (default: $WANBATCH_CONFIG or /etc/wanbatch/wanbatch.yaml)");
  app.set_version_flag("--version", wb::version_text(), "print the version and the git revision it was built from");

  auto* daemon = app.add_subcommand("daemon", "run the daemon: watch the spool and render every batch; each video checked with ffprobe, a contact sheet "
      "<output_root>/<batch>/index.html, notify.command and notify.webhooks when a batch ends, Prometheus metrics at "
      "http://<metrics.listen>/metrics (default 127.0.0.1:9464), logs to the journal with BATCH=, SHOT=, REQUEST_ID= "
      "under systemd (SIGTERM drains and stops, SIGHUP reloads the config, SIGUSR1 logs a status line; "
      "docs/OPERATIONS.md)");
  std::string log_level;
  daemon->add_option("--log-level", log_level, "debug, info, warn or error (overrides log_level)");

  std::vector<std::string> files;
  auto* validate = app.add_subcommand(
      "validate",
      "check manifests: every rule, every local media file (exists, readable, an image or audio file by its "
      "content) and, when a daemon config is found, that it lies under input_roots (the last line says which); "
      "print every problem as file:line: field: message. Exit 0 all valid, 1 problems found, 2 usage or config "
      "error. Without --config or $WANBATCH_CONFIG and no /etc/wanbatch/wanbatch.yaml, it needs no config");
  validate->add_option("files", files, "manifest files")->required();

  auto* submit = app.add_subcommand(
      "submit", "validate manifests, record their folder as base_dir, and drop them into the spool");
  submit->add_option("files", files, "manifest files")->required();

  wb::StatusOptions status_options = wb::StatusOptions::for_stdout();
  auto* status = app.add_subcommand(
      "status",
      "one line per batch: progress bar (# done, ! failed/held/rejected/cancelled, > in flight, . pending), counts, "
      "credits spent and the estimate for the rest against the batch budget, an ETA from the learned render "
      "times, the in-flight cap and the submit rate; then why waiting shots wait and the shots that need a "
      "person (HELD, FAILED, REJECTED, and jobs stuck far beyond their render time). With BATCH: every shot of it (state, age, take, request_id, reason, a revision's next take queued behind it). Reads the state store "
      "read-only; works while the daemon runs");
  status->add_option("batch", status_options.batch, "list this batch's shots");
  status->add_flag("--json", status_options.json,
                   R"(print JSON: {"batches":[{"batch","shots","states","progress","credits_spent",)"
                   R"("credits_remaining_estimate","budget_credits","eta","eta_unknown","waiting","takes_queued",...}],)"
                   R"("submit_wait","daemon":{...}}; with BATCH also "shot_list")");
  status->add_flag("--watch,-w", status_options.watch,
                   "redraw until Ctrl-C (in place on a terminal; to a pipe, one plain snapshot after another). "
                   "Colour only on a terminal, never with NO_COLOR set or TERM=dumb");
  status->add_option("--interval", status_options.interval_seconds, "seconds between redraws with --watch")
      ->default_val(2)
      ->check(CLI::Range(0.2, 3600.0));

  std::string target;
  bool yes = false;
  auto* retry = app.add_subcommand(
      "retry",
      "render HELD, FAILED and REJECTED shots again: a shot HELD while its job was followed resumes at that step "
      "(no new submit, no cost); the others need a new submit, a new billed job, which is done only with --yes "
      "(without it, they are listed with their estimated cost)");
  retry->add_option("target", target, "BATCH or BATCH/SHOT")->required();
  retry->add_flag("--yes,-y", yes, "also resubmit the shots that need a new (billed) job");
  bool abandon = false;
  auto* cancel = app.add_subcommand(
      "cancel",
      "cancel shots that have not ended. A take already submitted (paid for, on the provider) is never abandoned "
      "without --abandon: it is followed to its end and its video kept (a revision's next take queued behind it is "
      "cancelled); exit 0, 3 when such a paid take keeps running, 1 on an error");
  cancel->add_option("target", target, "BATCH or BATCH/SHOT")->required();
  cancel->add_flag("--abandon", abandon,
                   "also abandon a paid take on the provider: stop following it (it cannot be stopped there and is "
                   "billed: its video is lost, its estimated cost counted)");
  std::string request_id;
  auto* adopt = app.add_subcommand(
      "adopt",
      "a HELD shot follows a job found on the provider's dashboard (an ambiguous submit, an expired record): "
      "polled, fetched, downloaded, DONE, never submitted again; refused when the request_id belongs to another "
      "shot or to an earlier take of this one, or the shot is not HELD");
  adopt->add_option("target", target, "BATCH/SHOT")->required();
  adopt->add_option("request_id", request_id, "the provider's request_id of the job")->required();
  auto* pause = app.add_subcommand("pause", "stop submitting new shots (kept across restarts); polls and downloads go on");
  auto* resume = app.add_subcommand("resume", "submit again after a pause");
  auto* estimate = app.add_subcommand(
      "estimate", "credits the manifests will cost, and whether the balance and budgets cover it (exit 1 if not)");
  estimate->add_option("files", files, "manifest files")->required();
  bool plan_json = false;
  auto* plan = app.add_subcommand(
      "plan",
      "for each shot of the manifests, whether it would render as a revision of its batch and why (new, which "
      "field changed, last take failed, a chain child HELD by a parent that renders again, unchanged, removed) and "
      "the estimated credits; changes nothing (reads "
      "the state store read-only; works while the daemon runs); exit 0, 2 when a manifest does not load");
  plan->add_option("files", files, "manifest files")->required();
  plan->add_flag("--json", plan_json,
                 R"(print JSON: {"manifests":[{"file","batch","exists","revision","no_op","renders","removed","released","kept",)"
                 R"("credits_estimate","shots":[{"id","action","released_by","renders","why","changed","state","take",)"
                 R"("credits_estimate"}]}],"credits_estimate"})");
  wb::RehearseOptions rehearse_options;
  auto* rehearse = app.add_subcommand(
      "rehearse",
      "play the manifests through the real scheduler on a simulated clock against an imagined provider: the "
      "learned render times (or the product page's prior), the configured limits, window and budgets, the "
      "daemon's last balance reading. Prints the predicted first submit, makespan, finish time, credits, API "
      "requests and where the batch would wait. Sends nothing, spends nothing, changes nothing. Exit 0, or 1 "
      "when it would not finish (a budget or the balance that does not cover it; 7 simulated days at most) or "
      "a manifest is invalid (or $TMPDIR, when set, cannot hold its temporary folder; else /dev/shm or /tmp; or its file system has not the room the rehearsal needs); 2 "
      "a usage error (a malformed --at); 130 or 143 when SIGINT or SIGTERM stopped it (its temporary folder "
      "removed)");
  rehearse->add_option("files", files, "manifest files")->required();
  auto* rehearse_at = rehearse->add_option(
      "--at", rehearse_options.at, "start at this local time HH:MM, 00:00..23:59 (its next occurrence; default now)");
  rehearse->add_flag("--json", rehearse_options.json,
                     R"(print JSON: {"start","first_submit","finish","finished","stalled","makespan_seconds","credits",)"
                     R"("api_requests","requests","downloads","shots","states","waits":[{"kind","reason","seconds","from"}],)"
                     R"("balance","learned_render_samples"})");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help and --version: 0; any usage error: 2
  }
  if (*rehearse && rehearse_at->count() > 0)  // given, even as '': it must be a time
    if (std::string problem = wb::rehearse_at_problem(rehearse_options.at); !problem.empty()) {
      std::cerr << "wanbatch rehearse: " << problem << "\nRun with --help for more information.\n";
      return 2;
    }

  // Logs go to stderr (journald under systemd); stdout is for command output.
  wb::setup_logging();
  wb::Config config;
  // validate needs no daemon config: without one named (--config, $WANBATCH_CONFIG)
  // and none at the default path, it checks all but input_roots.
  const char* config_env = std::getenv("WANBATCH_CONFIG");
  bool config_named = config_option->count() > 0 || (config_env && *config_env);
  struct stat st {};
  bool config_found = config_named || ::stat(config_path.c_str(), &st) == 0;
  if (*validate && !config_found) {
    config.path = config_path;
  } else {
    try {
      config = wb::load_config(config_path);
    } catch (const wb::Error& e) {
      std::cerr << "wanbatch: " << e.what() << "\n";
      return 2;
    }
  }
  spdlog::set_level(spdlog::level::from_str(log_level.empty() ? config.log_level : log_level));
  try {
    if (*daemon) return wb::run_daemon(config);
    if (*validate) return wb::cmd_validate(config, config_found, files, std::cout, std::cerr);
    if (*submit) return wb::cmd_submit(config, files, std::cout, std::cerr);
    if (*status) return wb::cmd_status(config, status_options, std::cout, std::cerr);
    if (*retry) return wb::cmd_control(config, "retry", target, std::cout, std::cerr, yes);
    if (*cancel) return wb::cmd_control(config, "cancel", target, std::cout, std::cerr, false, abandon);
    if (*adopt) return wb::cmd_adopt(config, target, request_id, std::cout, std::cerr);
    if (*pause) return wb::cmd_control(config, "pause", "", std::cout, std::cerr);
    if (*resume) return wb::cmd_control(config, "resume", "", std::cout, std::cerr);
    if (*estimate) return wb::cmd_estimate(config, files, std::cout, std::cerr);
    if (*plan) return wb::cmd_plan(config, files, plan_json, std::cout, std::cerr);
    if (*rehearse) return wb::cmd_rehearse(config, files, rehearse_options, std::cout, std::cerr);
  } catch (const std::exception& e) {
    std::cerr << "wanbatch: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
