// Money, in one unit: what a shot is expected to cost (the price table refined
// by observed costs), what has been spent (per batch, per local day, since the
// last balance reading), what is committed (estimates of submitted shots whose
// cost is not known yet), and the three limits a new submit must fit: the
// batch budget, the daily budget, the balance less the reserve. The daemon's
// submit gate and `wanbatch estimate` both ask it, so the arithmetic exists once.
// Sums are kept in integer micro-credits, exact; credits are shown with
// format_credits().
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "jobs/credits.h"
#include "jobs/manifest.h"
#include "jobs/settings.h"
#include "jobs/util.h"

namespace wb {

using Micro = MicroCredits;  // millionths of a credit (jobs/credits.h)
constexpr Micro kMaxMicro = kMaxMicroCredits;  // to_micro() saturates here
// "12.35": two decimals, as a waiting reason shows credits (exact: from the integer).
std::string format_credits(Micro micro);

class CostModel {
 public:
  explicit CostModel(const PricingConfig& pricing) : pricing_(pricing) {}
  Micro estimate(const ShotSpec& shot) const;
  // Credits per second of video for a resolution: observed average, else the table.
  double per_second(const std::string& resolution) const;
  void observe(const ShotSpec& shot, double cost);
  // False for a cost no price could explain: negative, or over 100 times the
  // price table's figure for the shot. Such a cost is still spent, never learned.
  bool plausible(const ShotSpec& shot, double cost) const;
  // What was observed, as the store keeps it (meta/cost_model):
  // {"720P": {"micro": n, "seconds": n}, ...}. A record that cannot be read is ignored.
  std::string to_json() const;
  void load(const std::string& json);

 private:
  struct Observed {
    Micro credits = 0;
    int64_t seconds = 0;
  };
  PricingConfig pricing_;
  std::map<std::string, Observed> observed_;
};

class Spend {
 public:
  // `limits` is read live (a SIGHUP may change the reserve and the daily budget): it must outlive the Spend.
  Spend(const LimitsConfig& limits, const PricingConfig& pricing) : limits_(limits), costs_(pricing) {}
  Spend(LimitsConfig&&, const PricingConfig&) = delete;
  CostModel& costs() { return costs_; }
  const CostModel& costs() const { return costs_; }

  // A cost the provider reported for a shot, spent on local day `day`.
  // `since_balance`: after the last balance reading (not on load).
  void spent(const std::string& batch, const std::string& day, double cost, bool since_balance);
  Micro spent_in_batch(const std::string& batch) const;
  Micro spent_on(const std::string& day) const;
  // Reads a day's spend the first time it is asked for (from the store's aggregate).
  std::function<Micro(const std::string& day)> day_loader;
  void forget_batch(const std::string& batch) { batch_spent_.erase(batch); }
  // What was spent before this run (from the store), each once at load.
  void set_batch_spent(const std::string& batch, Micro spent) { batch_spent_[batch] = spent; }
  void set_day_spent(const std::string& day, Micro spent) { daily_spent_[day] = spent; }

  // A submitted shot's estimate, held until its cost is known or it ends.
  void commit(const std::string& key, const std::string& batch, Micro estimate);
  void release(const std::string& key);
  Micro committed() const { return committed_; }
  Micro committed_in_batch(const std::string& batch) const;

  void set_balance(double balance);
  std::optional<double> balance() const { return balance_; }
  // The balance less what was spent since it was read, what is committed and the reserve.
  std::optional<Micro> available() const;

  // Why a new spend of `amount` does not fit, or "" when it does. Each limit
  // alone, for `estimate`; check() asks all three for a submit.
  static std::string batch_budget_gate(std::optional<double> budget, Micro committed, Micro amount);
  std::string daily_gate(const std::string& day, Micro amount) const;
  std::string balance_gate(Micro amount) const;
  // Batch-wide: the batch budget; daemon-wide: the daily budget and the balance.
  struct Check {
    std::string batch_wait;   // this batch waits
    std::string global_wait;  // every submit waits
  };
  Check check(const std::string& batch, std::optional<double> budget, const std::string& day, Micro amount) const;

 private:
  const LimitsConfig& limits_;  // live: a SIGHUP may change the reserve and the daily budget
  CostModel costs_;
  std::map<std::string, Micro> batch_spent_;
  mutable std::map<std::string, Micro> daily_spent_;
  Micro spent_since_balance_ = 0;
  std::optional<double> balance_;
  std::map<std::string, std::pair<std::string, Micro>> commitments_;  // key -> batch, estimate
  std::map<std::string, Micro> batch_committed_;
  Micro committed_ = 0;
};

}  // namespace wb
