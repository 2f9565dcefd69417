// `wanbatch plan FILE...`: what each manifest would render as a revision of
// its batch (jobs/revision.h, the same decision the daemon makes) and what it
// would cost (jobs/engine/spend.h, the estimate's arithmetic). It changes
// nothing: the state store is opened read-only, which works while the daemon
// runs and holds its lock.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <ostream>

#include "daemon/commands.h"
#include "jobs/credits.h"
#include "jobs/engine/spend.h"
#include "jobs/json_safe.h"
#include "jobs/manifest.h"
#include "jobs/revision.h"
#include "jobs/store.h"
#include "jobs/util.h"

namespace wb {

namespace {
// What will be paid, plainly: "will re-render 3 shots (~1.5 credits), keep 17".
// `releasers`: the shots whose new take releases HELD chain children ("sh010's").
std::string plan_headline(const RevisionCounts& c, Micro credits, bool exists, const std::vector<std::string>& releasers) {
  auto shots = [](int n) { return std::to_string(n) + (n == 1 ? " shot" : " shots"); };
  std::string out;
  if (!exists) return "will render " + shots(c.renders()) + " (~" + credits_text(credits) + " credits)";
  out = c.renders() ? "will re-render " + shots(c.renders()) + " (~" + credits_text(credits) + " credits)"
                    : std::string("will render nothing (0 credits)");
  std::string why;
  auto part = [&why](int n, const char* what) {
    if (n) why += (why.empty() ? "" : ", ") + std::to_string(n) + " " + what;
  };
  part(c.new_shots, "new");
  part(c.changed, "changed");
  part(c.not_done, "last take not DONE");
  part(c.after_running, "after the take on the provider");
  if (c.released) {
    std::string by;
    for (size_t i = 0; i < releasers.size(); ++i)
      by += (i == 0 ? "" : i + 1 == releasers.size() ? " and " : ", ") + releasers[i] + "'s";
    why += (why.empty() ? "" : ", ") + std::to_string(c.released) + (c.released == 1 ? " chain child" : " chain children") +
           " HELD by a parent, released by " + by + (releasers.size() == 1 ? " new take" : " new takes");
  }
  if (!why.empty()) out += ": " + why;
  out += "; keep " + std::to_string(c.kept);
  if (c.updated)
    out += "; " + shots(c.updated) + " not yet submitted take the new spec (billed once, when submitted, as "
           "already planned)";
  if (c.blocked)
    out += "; " + shots(c.blocked) + " HELD by a parent that gives no frame (not submitted, nothing billed)";
  if (c.removed) out += "; " + std::to_string(c.removed) + " removed (kept on disk, nothing billed)";
  return out;
}
}  // namespace

int cmd_plan(const Config& config, const std::vector<std::string>& files, bool json, std::ostream& out,
             std::ostream& err) {
  const ManifestRules rules = manifest_rules(config);
  Spend spend(config.limits, config.pricing);
  std::unique_ptr<Store> store;
  try {
    store = Store::open(join_path(config.state_dir, "db"), Store::Mode::read_only);
    if (auto costs = store->meta("cost_model")) spend.costs().load(*costs);
  } catch (const Error& e) {
    err << "no state store to compare with (" << e.what() << "): every shot is new\n";
  }
  nlohmann::json all = nlohmann::json::array();
  Micro total = 0;
  for (const auto& f : files) {
    ManifestResult r = load_manifest(f, rules);
    if (!r.manifest) {
      err << format_problems(f, r.problems);
      return 2;
    }
    const Manifest& m = *r.manifest;
    std::optional<BatchRecord> batch = store ? store->batch(m.batch) : std::nullopt;
    std::vector<Shot> stored = batch ? store->shots(m.batch) : std::vector<Shot>{};
    std::map<std::string, Inputs> inputs;
    for (const auto& spec : m.shots) inputs[spec.id] = fingerprint_inputs(spec);
    // The same bytes as the batch's last manifest, as the daemon compares them: the
    // file itself, or the copy `wanbatch submit` spools (with its base_dir line).
    bool same_bytes = batch && batch->sha256 == m.sha256;
    if (batch && !same_bytes && !m.base_dir_given) {
      try {
        same_bytes = batch->sha256 == sha256_hex(with_base_dir(read_file(f), m.base_dir));
      } catch (const Error&) {
      }
    }
    RevisionPlan plan = plan_revision(stored, m, inputs, same_bytes);
    std::map<std::string, const ShotSpec*> specs;
    for (const auto& spec : m.shots) specs[spec.id] = &spec;
    Micro sum = 0;
    nlohmann::json shots = nlohmann::json::array();
    int removed = 0;
    for (const auto& p : plan.shots) {
      Micro cost = p.costs() ? spend.costs().estimate(*specs[p.id]) : 0;
      sum += cost;
      removed += p.action == ShotPlan::Action::remove;
      shots.push_back({{"id", p.id},
                       {"action", p.released() ? "render after its parent"
                                  : p.blocked()  ? "held by its parent"
                                                 : action_text(p.action)},
                       {"released_by", p.released() ? nlohmann::json(p.released_by) : nlohmann::json(nullptr)},
                       {"held_by", p.blocked() ? nlohmann::json(p.blocked_by) : nlohmann::json(nullptr)},
                       {"renders", p.costs()},
                       {"why", why_text(p)},
                       {"changed", p.changed},
                       {"state", batch && p.why != ShotPlan::Why::new_shot ? nlohmann::json(to_string(p.state))
                                                                           : nlohmann::json(nullptr)},
                       {"take", p.take},
                       {"credits_estimate", credits_json(cost)}});
    }
    total += sum;
    const int revision = !batch ? 1 : plan.changes_nothing() ? batch->revision : batch->revision + 1;
    const std::string verdict = !batch ? "a new batch"
                                : plan.changes_nothing()
                                    ? "a no-op revision of batch " + m.batch + " (revision " +
                                          std::to_string(batch->revision) + " stays)"
                                    : "revision " + std::to_string(revision) + " of batch " + m.batch;
    all.push_back({{"file", f},
                   {"batch", m.batch},
                   {"exists", batch.has_value()},
                   {"revision", revision},
                   {"no_op", batch && plan.changes_nothing()},
                   {"same_bytes", same_bytes},
                   {"renders", plan.renders()},
                   {"removed", removed},
                   {"released", count_plan(plan).released},
                   {"held_by_parent", count_plan(plan).blocked},
                   {"kept", count_plan(plan).kept},
                   {"credits_estimate", credits_json(sum)},
                   {"shots", shots}});
    if (json) continue;
    std::vector<std::string> releasers;
    for (const auto& p : plan.shots)
      if (p.released() && std::find(releasers.begin(), releasers.end(), p.released_by) == releasers.end())
        releasers.push_back(p.released_by);
    out << f << ": " << verdict << ": " << plan_headline(count_plan(plan), sum, batch.has_value(), releasers) << "\n";
    size_t w = 4;
    for (const auto& p : plan.shots) w = std::max(w, p.id.size());
    for (const auto& p : plan.shots) {
      std::string id = p.id;
      id.resize(w, ' ');
      std::string act = p.costs() ? "render" : p.blocked() ? "held" : action_text(p.action);
      act.resize(7, ' ');
      out << "  " << id << "  " << act << "  take " << p.take << "  " << why_text(p);
      if (p.costs()) out << "  ~" << credits_text(spend.costs().estimate(*specs[p.id]));
      out << "\n";
    }
  }
  if (json) {
    out << json_text({{"manifests", all}, {"credits_estimate", credits_json(total)}}, 2) << "\n";
  } else if (files.size() > 1) {
    out << "total: ~" << credits_text(total) << " credits\n";
  }
  return 0;
}

}  // namespace wb
