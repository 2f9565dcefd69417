#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jobs/util.h"
#include "tests/support.h"

using namespace wb;

TEST_CASE("sha256 and base64 match known vectors") {
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(base64_encode("hello") == "aGVsbG8=");
  CHECK(base64_encode("") == "");
}

TEST_CASE("a file that cannot be read to its end has no SHA-256: an error, not the digest of what was read") {
  // Before the fix a read error ended the loop as the end of the file did, and the
  // sidecar (or a revision's fingerprint) carried the digest of the part read.
  const std::string path = test::cwd() + "/v.mp4";
  test::write(path, std::string(200000, 'v'));
  Fd whole(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  CHECK(sha256_fd_hex(whole.get()) == sha256_hex(std::string(200000, 'v')));
  // /proc/self/mem is a regular file whose first page cannot be read (EIO).
  Fd mem(::open("/proc/self/mem", O_RDONLY | O_CLOEXEC));
  REQUIRE(mem.get() >= 0);
  CHECK_THROWS_WITH_AS(sha256_fd_hex(mem.get()), doctest::Contains("cannot read the file to hash it"), Error);
  Fd dir_fd(::open(test::cwd().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  CHECK_THROWS_AS(sha256_fd_hex(dir_fd.get()), Error);
  Fd write_only(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  CHECK_THROWS_AS(sha256_fd_hex(write_only.get()), Error);
}

TEST_CASE("reset times parse as ISO 8601, epoch seconds and epoch milliseconds") {
  auto iso = parse_reset_time("2026-11-24T14:30:00.250Z");
  REQUIRE(iso);
  CHECK(iso8601_utc(*iso) == "2026-11-24T14:30:00.250Z");
  CHECK(to_epoch_ms(*parse_reset_time("1800000000")) == 1800000000000);
  CHECK(to_epoch_ms(*parse_reset_time("1800000000123")) == 1800000000123);
  CHECK_FALSE(parse_reset_time(""));
  CHECK_FALSE(parse_reset_time("soon"));
}

TEST_CASE("ids allow [A-Za-z0-9._-]{1,64} and nothing that walks paths") {
  CHECK(is_valid_id("sh010"));
  CHECK(is_valid_id("a.b-c_D"));
  CHECK_FALSE(is_valid_id(""));
  CHECK_FALSE(is_valid_id(".."));
  CHECK_FALSE(is_valid_id("."));
  CHECK_FALSE(is_valid_id("a/b"));
  CHECK_FALSE(is_valid_id("sp ace"));
  CHECK_FALSE(is_valid_id(std::string(65, 'a')));
  CHECK(is_valid_id(std::string(64, 'a')));
}

TEST_CASE("atomic writes replace the file whole and refuse a symlink at the name") {
  write_file_atomic(test::cwd(), "f.txt", "one");
  write_file_atomic(test::cwd(), "f.txt", "two");
  CHECK(test::read("f.txt") == "two");
  CHECK(test::list(".") == std::vector<std::string>{"f.txt"});
  REQUIRE(::symlink("/tmp/elsewhere", "link.txt") == 0);
  CHECK_THROWS_AS(write_file_atomic(test::cwd(), "link.txt", "x"), Error);
}

TEST_CASE("read_file refuses files over its limit") {
  test::write("big", std::string(100, 'x'));
  CHECK(read_file("big", 100).size() == 100);
  CHECK_THROWS_AS(read_file("big", 99), Error);
}
