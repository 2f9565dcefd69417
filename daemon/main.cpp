// wanbatch: renders batches of image-to-video shots on Segmind's Wan 2.7 API.
// main() only parses the command line; everything else lives in wanbatch_core.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "config/config.h"
#include "daemon/commands.h"
#include "daemon/daemon.h"
#include "daemon/journal_log.h"
#include "jobs/util.h"

int main(int argc, char** argv) {
  CLI::App app{
      "wanbatch: renders YAML shot lists as videos on Segmind's Wan 2.7 image-to-video API.\n"
      "Drop manifests into the spool (or use `wanbatch submit`); the daemon submits every shot,\n"
      "follows it, downloads and checks each MP4 and writes a report per batch.\n"
      "Docs: docs/MANIFEST.md, docs/CONFIG.md, docs/ARCHITECTURE.md."};
  app.require_subcommand(1);
  std::string config_path = wb::default_config_path();
  app.add_option("-c,--config", config_path,
                 "daemon config file (default: $WANBATCH_CONFIG or /etc/wanbatch/wanbatch.yaml)");
  app.set_version_flag("--version", "wanbatch 0.1.0");

  auto* daemon = app.add_subcommand("daemon", "run the daemon: watch the spool and render every batch (SIGTERM drains and stops, SIGHUP reloads the config, SIGUSR1 logs a status line; docs/OPERATIONS.md)");
  std::string log_level;
  daemon->add_option("--log-level", log_level, "debug, info, warn or error (overrides log_level)");

  std::vector<std::string> files;
  auto* validate = app.add_subcommand(
      "validate", "check manifests; print every problem as file:line: field: message; exit 1 if any");
  validate->add_option("files", files, "manifest files")->required();

  auto* submit = app.add_subcommand(
      "submit", "validate manifests, record their folder as base_dir, and drop them into the spool");
  submit->add_option("files", files, "manifest files")->required();

  bool json = false;
  auto* status = app.add_subcommand(
      "status", "show each batch with its shots counted by state, why waiting shots wait, and HELD reasons");
  status->add_flag("--json", json, R"(print {"batches":[{"batch":NAME,"shots":N,"states":{...}}],"submit_wait":WHY})");

  std::string target;
  bool yes = false;
  auto* retry = app.add_subcommand(
      "retry",
      "render HELD, FAILED and REJECTED shots again: a shot HELD while its job was followed resumes at that step "
      "(no new submit, no cost); the others need a new submit, a new billed job, which is done only with --yes "
      "(without it, they are listed with their estimated cost)");
  retry->add_option("target", target, "BATCH or BATCH/SHOT")->required();
  retry->add_flag("--yes,-y", yes, "also resubmit the shots that need a new (billed) job");
  auto* cancel = app.add_subcommand(
      "cancel", "cancel shots that have not ended (a job already submitted cannot be stopped at the provider)");
  cancel->add_option("target", target, "BATCH or BATCH/SHOT")->required();
  auto* pause = app.add_subcommand("pause", "stop submitting new shots (kept across restarts); polls and downloads go on");
  auto* resume = app.add_subcommand("resume", "submit again after a pause");
  auto* estimate = app.add_subcommand(
      "estimate", "credits the manifests will cost, and whether the balance and budgets cover it (exit 1 if not)");
  estimate->add_option("files", files, "manifest files")->required();

  CLI11_PARSE(app, argc, argv);

  // Logs go to stderr (journald under systemd); stdout is for command output.
  wb::setup_logging();
  wb::Config config;
  try {
    config = wb::load_config(config_path);
  } catch (const wb::Error& e) {
    std::cerr << "wanbatch: " << e.what() << "\n";
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(log_level.empty() ? config.log_level : log_level));
  try {
    if (*daemon) return wb::run_daemon(config);
    if (*validate) return wb::cmd_validate(config, files, std::cout, std::cerr);
    if (*submit) return wb::cmd_submit(config, files, std::cout, std::cerr);
    if (*status) return wb::cmd_status(config, json, std::cout, std::cerr);
    if (*retry) return wb::cmd_control(config, "retry", target, std::cout, std::cerr, yes);
    if (*cancel) return wb::cmd_control(config, "cancel", target, std::cout, std::cerr);
    if (*pause) return wb::cmd_control(config, "pause", "", std::cout, std::cerr);
    if (*resume) return wb::cmd_control(config, "resume", "", std::cout, std::cerr);
    if (*estimate) return wb::cmd_estimate(config, files, std::cout, std::cerr);
  } catch (const std::exception& e) {
    std::cerr << "wanbatch: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
