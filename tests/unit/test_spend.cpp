// Money (jobs/engine/spend.h): micro-credits, the cost model, and the spend,
// commitments and limits a submit must fit, without a scheduler.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <map>
#include <string>

#include "jobs/engine/spend.h"

using namespace wb;

namespace {

ShotSpec spec_of(const std::string& resolution, int duration) {
  ShotSpec s;
  s.id = std::string("shot");
  s.resolution = resolution;
  s.duration = duration;
  return s;
}

}  // namespace

TEST_CASE("spend: credits become exact micro-credits and read back to the cent") {
  CHECK(to_micro(0.1) == 100000);
  CHECK(to_micro(0.1) + to_micro(0.2) + to_micro(0.3) == 600000);
  CHECK(format_credits(to_micro(0.1) + to_micro(0.2) + to_micro(0.3)) == "0.60");
  CHECK(from_micro(to_micro(12.345678)) == doctest::Approx(12.345678).epsilon(1e-12));
  CHECK(to_micro(-2.5) == -2500000);
  CHECK(to_micro(std::nan("")) == 0);
  CHECK(to_micro(std::numeric_limits<double>::infinity()) == kMaxMicro);

  CHECK(format_credits(0) == "0.00");
  CHECK(format_credits(12345678) == "12.35");
  CHECK(format_credits(-1234567) == "-1.23");
  CHECK(format_credits(-1000000) == "-1.00");
  // Half a cent rounds away from zero, just under it rounds toward zero, and
  // nothing rounds to "-0.00".
  CHECK(format_credits(5000) == "0.01");
  CHECK(format_credits(4999) == "0.00");
  CHECK(format_credits(-5000) == "-0.01");
  CHECK(format_credits(-4999) == "0.00");
  CHECK(format_credits(1005000) == "1.01");
  CHECK(format_credits(-1015000) == "-1.02");
}

TEST_CASE("spend: huge amounts saturate instead of wrapping, and every micro value formats") {
  // The provider's balance and costs are untrusted: an absurd figure must not
  // turn into a negative spend (which would lift every budget).
  CHECK(to_micro(1e12) == kMaxMicro);
  CHECK(to_micro(1e13) > 0);
  CHECK(to_micro(1e300) > 0);
  CHECK(to_micro(1e300) >= to_micro(1e12));
  CHECK(to_micro(-1e300) < 0);
  CHECK(to_micro(-1e300) <= to_micro(-1e12));
  CHECK(format_credits(to_micro(1e12)) == "1000000000.00");
  // The extremes of the type, without overflow.
  CHECK(format_credits(std::numeric_limits<Micro>::max()) == "9223372036854.78");
  CHECK(format_credits(std::numeric_limits<Micro>::min()) == "-9223372036854.78");
  CHECK(format_credits(std::numeric_limits<Micro>::max() - 807) == "9223372036854.78");  // ...5000: half a cent
  CHECK(format_credits(std::numeric_limits<Micro>::max() - 808) == "9223372036854.77");
  CHECK(format_credits(std::numeric_limits<Micro>::min() + 808) == "-9223372036854.78");
  CHECK(format_credits(std::numeric_limits<Micro>::min() + 809) == "-9223372036854.77");
}

TEST_CASE("spend: the cost model estimates from the price table, then from observed costs") {
  PricingConfig pricing;  // 0.1 and 0.15 a second
  CostModel m(pricing);
  CHECK(m.estimate(spec_of("720P", 5)) == 500000);
  CHECK(m.estimate(spec_of("1080P", 10)) == 1500000);
  CHECK(m.per_second("720P") == doctest::Approx(0.1));

  m.observe(spec_of("720P", 5), 0.8);
  CHECK(m.estimate(spec_of("720P", 10)) == 1600000);
  CHECK(m.per_second("720P") == doctest::Approx(0.16));
  CHECK(m.estimate(spec_of("1080P", 10)) == 1500000);  // another resolution: still the table
  m.observe(spec_of("720P", 15), 0.8);                   // 1.6 credits over 20 s
  CHECK(m.estimate(spec_of("720P", 5)) == 400000);

  // Nonsense is not learned.
  CostModel n(pricing);
  n.observe(spec_of("720P", 5), -1);
  n.observe(spec_of("720P", 5), std::nan(""));
  n.observe(spec_of("720P", 0), 3);
  CHECK(n.estimate(spec_of("720P", 5)) == 500000);
  CHECK(n.to_json() == "{}");
}

TEST_CASE("spend: the cost model round-trips through its record and ignores what it cannot read") {
  PricingConfig pricing;
  CostModel m(pricing);
  m.observe(spec_of("720P", 5), 0.8);
  m.observe(spec_of("1080P", 10), 2.0);
  CostModel back(pricing);
  back.load(m.to_json());
  CHECK(back.to_json() == m.to_json());
  CHECK(back.estimate(spec_of("720P", 10)) == 1600000);
  CHECK(back.estimate(spec_of("1080P", 5)) == 1000000);

  const char* garbage[] = {
      "",
      "not json",
      "[1,2]",
      R"({"720P": "x"})",
      R"({"720P": {"micro": 100}})",
      R"({"720P": {"micro": -1, "seconds": 5}})",
      R"({"720P": {"micro": 1.5, "seconds": 5}})",
      R"({"720P": {"micro": 100, "seconds": 0}})",
      R"({"720P": {"micro": 100, "seconds": -5}})",
      R"({"720P": {"micro": "100", "seconds": 5}})",
      R"({"720P": {"micro": 18446744073709551615, "seconds": 5}})",
  };
  for (const char* g : garbage) {
    CAPTURE(g);
    CostModel c(pricing);
    c.observe(spec_of("720P", 5), 5.0);
    c.load(g);  // replaces what was observed: nothing readable, the table again
    CHECK(c.estimate(spec_of("720P", 5)) == 500000);
    CHECK(c.to_json() == "{}");
  }
  // A readable entry survives a garbage neighbour.
  CostModel c(pricing);
  c.load(R"({"720P": {"micro": "x", "seconds": 5}, "1080P": {"micro": 2000000, "seconds": 10}})");
  CHECK(c.estimate(spec_of("720P", 5)) == 500000);
  CHECK(c.estimate(spec_of("1080P", 5)) == 1000000);
}

TEST_CASE("spend: commitments add up per batch and release once") {
  const LimitsConfig no_limits;
  Spend sp(no_limits, PricingConfig{});
  sp.commit("a/1", "a", 100);
  sp.commit("a/2", "a", 200);
  sp.commit("b/1", "b", 400);
  CHECK(sp.committed() == 700);
  CHECK(sp.committed_in_batch("a") == 300);
  CHECK(sp.committed_in_batch("b") == 400);
  CHECK(sp.committed_in_batch("c") == 0);

  sp.commit("a/2", "a", 50);  // committed again: replaces
  CHECK(sp.committed() == 550);
  CHECK(sp.committed_in_batch("a") == 150);

  sp.release("a/1");
  sp.release("a/1");  // twice: harmless
  sp.release("never");
  CHECK(sp.committed() == 450);
  CHECK(sp.committed_in_batch("a") == 50);
  sp.release("a/2");
  CHECK(sp.committed_in_batch("a") == 0);
  CHECK(sp.committed() == 400);
}

TEST_CASE("spend: the batch budget passes exactly at the budget and fails one micro-credit over") {
  CHECK(Spend::batch_budget_gate(std::nullopt, 1'000'000'000, 1'000'000'000) == "");
  CHECK(Spend::batch_budget_gate(1.0, 600000, 400000) == "");
  std::string why = Spend::batch_budget_gate(1.0, 600000, 400001);
  CHECK(why == "batch budget 1.00 would be exceeded (committed 0.60, this shot ~0.40)");
  CHECK(Spend::batch_budget_gate(0.0, 0, 0) == "");
  CHECK(Spend::batch_budget_gate(0.0, 0, 1) != "");

  // check(): spent and committed in the batch count; other batches do not.
  const LimitsConfig no_limits;
  Spend sp(no_limits, PricingConfig{});
  sp.set_batch_spent("a", 500000);
  sp.commit("a/1", "a", 300000);
  sp.commit("b/1", "b", 900000);
  CHECK(sp.check("a", 1.0, "2030-01-01", 200000).batch_wait == "");
  Spend::Check c = sp.check("a", 1.0, "2030-01-01", 200001);
  CHECK(c.batch_wait != "");
  CHECK(c.global_wait == "");
  sp.forget_batch("a");
  CHECK(sp.spent_in_batch("a") == 0);
}

TEST_CASE("spend: the daily budget counts the day's spend, read once, and every commitment") {
  LimitsConfig limits;
  limits.daily_budget_credits = 2;
  Spend sp(limits, PricingConfig{});
  std::map<std::string, int> loads;
  sp.day_loader = [&loads](const std::string& day) -> Micro {
    ++loads[day];
    return day == "2030-01-01" ? 1500000 : 0;
  };
  CHECK(sp.daily_gate("2030-01-01", 500000) == "");
  CHECK(sp.daily_gate("2030-01-01", 500001) == "daily budget 2.00 would be exceeded (committed today 1.50)");
  sp.commit("a/1", "a", 100000);
  CHECK(sp.daily_gate("2030-01-01", 400000) == "");
  CHECK(sp.daily_gate("2030-01-01", 400001) != "");
  CHECK(sp.daily_gate("2030-01-02", 1900000) == "");
  CHECK(sp.daily_gate("2030-01-02", 1900001) != "");

  // A cost on a day never asked about adds to what the store says of that day.
  sp.spent("a", "2030-01-03", 0.25, true);
  CHECK(loads["2030-01-03"] == 1);
  CHECK(sp.spent_on("2030-01-03") == 250000);
  sp.spent("a", "2030-01-01", 0.25, true);
  CHECK(sp.spent_on("2030-01-01") == 1750000);
  CHECK(sp.spent_in_batch("a") == 500000);
  CHECK(loads["2030-01-01"] == 1);

  // Without a daily budget there is no daily gate.
  const LimitsConfig no_limits;
  Spend free(no_limits, PricingConfig{});
  free.set_day_spent("2030-01-01", 1'000'000'000'000);
  CHECK(free.daily_gate("2030-01-01", 1'000'000'000'000) == "");
}

TEST_CASE("spend: the balance gate holds back the reserve, commitments and spend since the reading") {
  LimitsConfig limits;
  limits.credit_reserve = 2;
  Spend sp(limits, PricingConfig{});
  CHECK_FALSE(sp.available());
  CHECK(sp.balance_gate(1'000'000'000) == "");  // no reading yet: not this gate's call

  sp.set_balance(10);
  sp.commit("a/1", "a", 3000000);
  sp.spent("a", "2030-01-01", 1.0, true);
  sp.spent("a", "2030-01-01", 5.0, false);  // before the reading (loaded): already in the balance
  REQUIRE(sp.available());
  CHECK(*sp.available() == 4000000);
  CHECK(sp.balance_gate(4000000) == "");
  CHECK(sp.balance_gate(4000001) ==
        "credits: balance 10.00 less 4.00 committed and the reserve 2.00 leaves 4.00, this shot needs ~4.00");

  sp.set_balance(9);  // a new reading already holds what was spent
  CHECK(*sp.available() == 4000000);
  sp.release("a/1");
  CHECK(*sp.available() == 7000000);
}

TEST_CASE("spend: check() tells a batch's wait from a wait of every submit") {
  LimitsConfig limits;
  limits.daily_budget_credits = 1;
  Spend sp(limits, PricingConfig{});
  sp.set_balance(100);

  Spend::Check ok = sp.check("a", 5.0, "2030-01-01", 500000);
  CHECK(ok.batch_wait == "");
  CHECK(ok.global_wait == "");

  // The batch budget fails first and alone.
  Spend::Check batch = sp.check("a", 0.1, "2030-01-01", 2000000);
  CHECK(batch.batch_wait.find("batch budget") == 0);
  CHECK(batch.global_wait == "");

  // Within the batch budget, the daily budget stops everyone.
  Spend::Check daily = sp.check("a", 5.0, "2030-01-01", 1000001);
  CHECK(daily.batch_wait == "");
  CHECK(daily.global_wait.find("daily budget") == 0);

  // Within both, the balance.
  sp.set_balance(0.5);
  Spend::Check balance = sp.check("a", 5.0, "2030-01-01", 500001);
  CHECK(balance.batch_wait == "");
  CHECK(balance.global_wait.find("credits: balance") == 0);
}
