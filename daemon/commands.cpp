#include "daemon/commands.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>

#include "jobs/manifest.h"
#include "jobs/store.h"
#include "jobs/util.h"

namespace wb {

namespace {

ManifestRules rules_of(const Config& c) {
  ManifestRules r;
  r.input_roots = c.input_roots;
  r.max_shots = c.limits.max_shots_per_manifest;
  r.max_bytes = c.limits.max_manifest_bytes;
  r.max_media_bytes = c.limits.max_media_bytes;
  return r;
}

}  // namespace

int cmd_validate(const Config& config, const std::vector<std::string>& files, std::ostream& out,
                 std::ostream& err) {
  int bad = 0;
  for (const auto& f : files) {
    ManifestResult r = load_manifest(f, rules_of(config));
    if (r.manifest) {
      out << f << ": ok, batch " << r.manifest->batch << ", " << r.manifest->shots.size() << " shots\n";
    } else {
      ++bad;
      err << format_problems(f, r.problems);
    }
  }
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
    ManifestResult r = load_manifest(f, rules_of(config));
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

int cmd_status(const Config& config, bool json, std::ostream& out, std::ostream& err) {
  std::unique_ptr<Store> store;
  try {
    store = Store::open(join_path(config.state_dir, "db"), Store::Mode::read_only);
  } catch (const Error& e) {
    err << e.what() << "\n";
    return 1;
  }
  nlohmann::json batches = nlohmann::json::array();
  std::vector<std::pair<BatchRecord, std::vector<Shot>>> rows;
  for (auto& b : store->batches()) rows.emplace_back(b, store->shots(b.name));
  for (auto& [b, shots] : rows) {
    std::map<std::string, int> states;
    for (const auto& s : shots) ++states[to_string(s.state)];
    batches.push_back({{"batch", b.name}, {"shots", static_cast<int>(shots.size())}, {"states", states},
                       {"finished", b.finished}, {"priority", b.priority}});
  }
  if (json) {
    out << nlohmann::json{{"batches", batches}}.dump() << "\n";
    return 0;
  }
  if (rows.empty()) {
    out << "no batches yet\n";
    return 0;
  }
  for (auto& [b, shots] : rows) {
    std::map<std::string, int> states;
    for (const auto& s : shots) ++states[to_string(s.state)];
    out << b.name << (b.finished ? "  (finished)" : "") << "  " << shots.size() << " shots:";
    for (auto& [st, n] : states) out << " " << st << "=" << n;
    out << "\n";
    for (const auto& s : shots)
      if (s.state == ShotState::held || s.state == ShotState::failed || s.state == ShotState::rejected)
        out << "  " << s.spec.id << " " << to_string(s.state) << ": " << s.reason << "\n";
  }
  return 0;
}

}  // namespace wb
