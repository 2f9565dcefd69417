#include "jobs/engine/spend.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "jobs/json_safe.h"

namespace wb {


std::string format_credits(Micro micro) {
  // Rounded half away from zero to the cent, from the exact integer.
  Micro cents = micro / 10000;  // no overflow at either end of the type
  if (micro % 10000 >= 5000) ++cents;
  else if (micro % 10000 <= -5000) --cents;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s%lld.%02lld", cents < 0 ? "-" : "", std::llabs(cents) / 100LL,
                std::llabs(cents) % 100LL);
  return buf;
}

double CostModel::per_second(const std::string& resolution) const {
  auto it = observed_.find(resolution);
  if (it != observed_.end() && it->second.seconds > 0) return from_micro(it->second.credits) / it->second.seconds;
  return resolution == "1080P" ? pricing_.credits_per_second_1080p : pricing_.credits_per_second_720p;
}

Micro CostModel::estimate(const ShotSpec& shot) const {
  // Through a double: the observed sum times a duration may not fit in 64 bits.
  return to_micro(per_second(shot.resolution) * shot.duration);
}

bool CostModel::plausible(const ShotSpec& shot, double cost) const {
  // A cost far from the price table (a provider's unit mistake, a lie) must not
  // teach the model: one such figure would hold every later shot back.
  const double table = (shot.resolution == "1080P" ? pricing_.credits_per_second_1080p
                                                   : pricing_.credits_per_second_720p) *
                       shot.duration;
  return cost >= 0 && std::isfinite(cost) && (table <= 0 ? cost <= 1000 : cost <= 100 * table);
}

void CostModel::observe(const ShotSpec& shot, double cost) {
  if (shot.duration <= 0 || !plausible(shot, cost)) return;
  auto& o = observed_[shot.resolution];
  o.credits += to_micro(cost);
  o.seconds += shot.duration;
}

std::string CostModel::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [res, o] : observed_) j[res] = {{"micro", o.credits}, {"seconds", o.seconds}};
  return j.dump();
}

void CostModel::load(const std::string& json) {
  observed_.clear();
  auto j = parse_json_bounded(json);
  if (!j || !j->is_object()) return;
  for (const auto& [res, o] : j->items()) {
    if (!o.is_object() || !o.contains("micro") || !o.contains("seconds") || !o["micro"].is_number_integer() ||
        !o["seconds"].is_number_integer())
      continue;
    Micro credits = o["micro"].get<Micro>();
    int64_t seconds = o["seconds"].get<int64_t>();
    // At most 1,000 credits a second of video, as observe() would have let in.
    if (credits >= 0 && seconds > 0 && credits / seconds <= to_micro(1000)) observed_[res] = {credits, seconds};
  }
}

void Spend::spent(const std::string& batch, const std::string& day, double cost, bool since_balance) {
  Micro m = to_micro(cost);
  batch_spent_[batch] += m;
  daily_spent_[day] = spent_on(day) + m;
  if (since_balance) spent_since_balance_ += m;
}

Micro Spend::spent_in_batch(const std::string& batch) const {
  auto it = batch_spent_.find(batch);
  return it == batch_spent_.end() ? 0 : it->second;
}

Micro Spend::spent_on(const std::string& day) const {
  auto it = daily_spent_.find(day);
  if (it != daily_spent_.end()) return it->second;
  Micro m = day_loader ? day_loader(day) : 0;
  daily_spent_[day] = m;
  return m;
}

void Spend::commit(const std::string& key, const std::string& batch, Micro estimate) {
  release(key);
  commitments_[key] = {batch, estimate};
  batch_committed_[batch] += estimate;
  committed_ += estimate;
}

void Spend::release(const std::string& key) {
  auto it = commitments_.find(key);
  if (it == commitments_.end()) return;
  const auto& [batch, estimate] = it->second;
  if ((batch_committed_[batch] -= estimate) == 0) batch_committed_.erase(batch);
  committed_ -= estimate;
  commitments_.erase(it);
}

Micro Spend::committed_in_batch(const std::string& batch) const {
  auto it = batch_committed_.find(batch);
  return it == batch_committed_.end() ? 0 : it->second;
}

void Spend::set_balance(double balance) {
  balance_ = balance;
  spent_since_balance_ = 0;
}

std::optional<Micro> Spend::available() const {
  if (!balance_) return std::nullopt;
  return to_micro(*balance_) - spent_since_balance_ - committed_ - to_micro(limits_.credit_reserve);
}

std::string Spend::batch_budget_gate(std::optional<double> budget, Micro committed, Micro amount) {
  if (!budget || committed + amount <= to_micro(*budget)) return "";
  return "batch budget " + format_credits(to_micro(*budget)) + " would be exceeded (committed " +
         format_credits(committed) + ", this shot ~" + format_credits(amount) + ")";
}

std::string Spend::daily_gate(const std::string& day, Micro amount) const {
  Micro daily = to_micro(limits_.daily_budget_credits);
  Micro today = spent_on(day) + committed_;
  if (daily <= 0 || today + amount <= daily) return "";
  return "daily budget " + format_credits(daily) + " would be exceeded (committed today " + format_credits(today) +
         ")";
}

std::string Spend::balance_gate(Micro amount) const {
  auto left = available();
  if (!left || *left >= amount) return "";
  return "credits: balance " + format_credits(to_micro(*balance_)) + " less " +
         format_credits(spent_since_balance_ + committed_) + " committed and the reserve " +
         format_credits(to_micro(limits_.credit_reserve)) + " leaves " + format_credits(*left) +
         ", this shot needs ~" + format_credits(amount);
}

Spend::Check Spend::check(const std::string& batch, std::optional<double> budget, const std::string& day,
                          Micro amount) const {
  Check c;
  c.batch_wait = batch_budget_gate(budget, spent_in_batch(batch) + committed_in_batch(batch), amount);
  if (!c.batch_wait.empty()) return c;
  c.global_wait = daily_gate(day, amount);
  if (c.global_wait.empty()) c.global_wait = balance_gate(amount);
  return c;
}

}  // namespace wb
