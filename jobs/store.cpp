#include "jobs/store.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <cstdio>

#include "jobs/util.h"

namespace wb {

namespace {

std::string shot_key(const std::string& batch, const std::string& id) {
  return "s/" + batch + "/" + id;
}

nlohmann::json batch_json(const BatchRecord& b) {
  return {{"name", b.name},         {"priority", b.priority},       {"manifest_name", b.manifest_name},
          {"manifest_path", b.manifest_path}, {"sha256", b.sha256}, {"base_dir", b.base_dir},
          {"created_ms", b.created_ms}, {"shot_count", b.shot_count}, {"finished", b.finished},
          {"finished_ms", b.finished_ms},
          {"budget_credits", b.budget_credits ? nlohmann::json(*b.budget_credits) : nlohmann::json(nullptr)}};
}

BatchRecord batch_from(const std::string& text) {
  auto j = nlohmann::json::parse(text);
  BatchRecord b;
  b.name = j.at("name").get<std::string>();
  b.priority = j.value("priority", 0);
  b.manifest_name = j.value("manifest_name", "");
  b.manifest_path = j.value("manifest_path", "");
  b.sha256 = j.value("sha256", "");
  b.base_dir = j.value("base_dir", "");
  b.created_ms = j.value("created_ms", int64_t{0});
  b.shot_count = j.value("shot_count", 0);
  b.finished = j.value("finished", false);
  b.finished_ms = j.value("finished_ms", int64_t{0});
  if (j.contains("budget_credits") && j["budget_credits"].is_number())
    b.budget_credits = j["budget_credits"].get<double>();
  return b;
}

void check(const rocksdb::Status& s, const std::string& what) {
  if (!s.ok()) throw Error("state store: " + what + ": " + s.ToString());
}

}  // namespace

std::unique_ptr<Store> Store::open(const std::string& dir, Mode mode) {
  rocksdb::Options options;
  options.create_if_missing = mode == Mode::read_write;
  options.keep_log_file_num = 5;
  options.max_log_file_size = 8 << 20;
  // The daemon's data is small; keep memory and file handles modest.
  options.write_buffer_size = 8 << 20;
  options.max_open_files = 256;
  std::unique_ptr<Store> store(new Store());
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = mode == Mode::read_write
                          ? rocksdb::DB::Open(options, dir, &raw)
                          : rocksdb::DB::OpenForReadOnly(options, dir, &raw);
  if (!s.ok()) {
    if (mode == Mode::read_only && s.IsPathNotFound())
      throw Error("no state in " + dir + " yet (the daemon has not run with this state_dir)");
    throw Error("cannot open the state store in " + dir + ": " + s.ToString());
  }
  store->db_.reset(raw);

  std::string version;
  s = store->db_->Get(rocksdb::ReadOptions(), "meta/schema", &version);
  if (s.IsNotFound()) {
    if (mode == Mode::read_write)
      store->write({{"meta/schema", std::to_string(kSchemaVersion)}}, Sync::yes);
  } else {
    check(s, "reading the schema version");
    if (std::stoi(version) != kSchemaVersion)
      throw Error("the state in " + dir + " has schema version " + version + "; this wanbatch reads " +
                  std::to_string(kSchemaVersion));
  }
  std::unique_ptr<rocksdb::Iterator> it(store->db_->NewIterator(rocksdb::ReadOptions()));
  it->SeekForPrev("l/~");
  if (it->Valid() && it->key().starts_with("l/"))
    store->ledger_seq_ = std::stoull(it->key().ToString().substr(2));
  return store;
}

Store::~Store() = default;

void Store::write(const std::vector<std::pair<std::string, std::string>>& puts, Sync sync) {
  rocksdb::WriteBatch batch;
  for (const auto& [k, v] : puts) batch.Put(k, v);
  rocksdb::WriteOptions wo;
  wo.sync = sync == Sync::yes;
  check(db_->Write(wo, &batch), "write");
}

std::vector<std::string> Store::scan(const std::string& prefix) const {
  std::vector<std::string> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next())
    out.push_back(it->value().ToString());
  check(it->status(), "scan " + prefix);
  return out;
}

std::string Store::ledger_key() {
  char buf[32];
  std::snprintf(buf, sizeof buf, "l/%020llu", static_cast<unsigned long long>(++ledger_seq_));
  return buf;
}

void Store::add_batch(const BatchRecord& batch, const std::vector<Shot>& shots) {
  std::vector<std::pair<std::string, std::string>> puts;
  puts.emplace_back("b/" + batch.name, batch_json(batch).dump());
  for (const auto& s : shots) puts.emplace_back(shot_key(s.batch, s.spec.id), shot_to_json(s));
  write(puts, Sync::yes);
}

std::optional<std::string> Store::meta(const std::string& name) const {
  std::string v;
  auto s = db_->Get(rocksdb::ReadOptions(), "meta/" + name, &v);
  if (s.IsNotFound()) return std::nullopt;
  check(s, "read meta");
  return v;
}

void Store::put_meta(const std::string& name, const std::string& value) {
  write({{"meta/" + name, value}}, Sync::yes);
}

void Store::put_batch(const BatchRecord& batch) {
  write({{"b/" + batch.name, batch_json(batch).dump()}}, Sync::yes);
}

std::optional<BatchRecord> Store::batch(const std::string& name) const {
  std::string v;
  auto s = db_->Get(rocksdb::ReadOptions(), "b/" + name, &v);
  if (s.IsNotFound()) return std::nullopt;
  check(s, "read batch");
  return batch_from(v);
}

std::vector<BatchRecord> Store::batches() const {
  std::vector<BatchRecord> out;
  for (const auto& v : scan("b/")) out.push_back(batch_from(v));
  return out;
}

void Store::put_shot(const Shot& shot, Sync sync) {
  write({{shot_key(shot.batch, shot.spec.id), shot_to_json(shot)}}, sync);
}

void Store::put_shot_and_ledger(const Shot& shot, const nlohmann::json& ledger_entry) {
  std::vector<std::pair<std::string, std::string>> puts;
  puts.emplace_back(shot_key(shot.batch, shot.spec.id), shot_to_json(shot));
  if (!shot.request_id.empty()) puts.emplace_back("r/" + shot.request_id, shot.key());
  puts.emplace_back(ledger_key(), ledger_entry.dump());
  write(puts, Sync::yes);
}

std::vector<Shot> Store::shots(const std::string& batch) const {
  std::vector<Shot> out;
  for (const auto& v : scan("s/" + batch + "/")) out.push_back(shot_from_json(v));
  return out;
}

std::vector<Shot> Store::all_shots() const {
  std::vector<Shot> out;
  for (const auto& v : scan("s/")) out.push_back(shot_from_json(v));
  return out;
}

std::optional<std::string> Store::shot_by_request(const std::string& request_id) const {
  std::string v;
  auto s = db_->Get(rocksdb::ReadOptions(), "r/" + request_id, &v);
  if (s.IsNotFound()) return std::nullopt;
  check(s, "read request index");
  return v;
}

std::optional<std::string> Store::asset_url(const std::string& sha256) const {
  std::string v;
  auto s = db_->Get(rocksdb::ReadOptions(), "a/" + sha256, &v);
  if (s.IsNotFound()) return std::nullopt;
  check(s, "read asset");
  return nlohmann::json::parse(v).at("url").get<std::string>();
}

void Store::put_asset(const std::string& sha256, const std::string& url) {
  nlohmann::json j = {{"url", url}, {"uploaded_ms", to_epoch_ms(std::chrono::system_clock::now())}};
  write({{"a/" + sha256, j.dump()}}, Sync::no);
}

void Store::append_ledger(const nlohmann::json& entry) { write({{ledger_key(), entry.dump()}}, Sync::yes); }

std::vector<nlohmann::json> Store::ledger() const {
  std::vector<nlohmann::json> out;
  for (const auto& v : scan("l/")) out.push_back(nlohmann::json::parse(v));
  return out;
}

}  // namespace wb
