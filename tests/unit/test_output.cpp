#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "jobs/output.h"
#include "jobs/util.h"
#include "tests/support.h"

using namespace wb;

TEST_CASE("batch files and shot files never share a name in the output folder") {
  std::string root = test::cwd() + "/out";
  test::mkdirs(root);
  OutputDir out(root);
  out.write("b", "report.json", "{\"report\":1}");
  CHECK_THROWS_AS(out.write("b", "sh010.json", "{}"), Error);  // not a batch file
  CHECK_THROWS_AS(out.write_sidecar("b", "report", "{\"shot\":1}"), Error);
  CHECK_THROWS_AS(out.write_sidecar("b", "Report", "{\"shot\":1}"), Error);
  long long offset = 0;
  CHECK_THROWS_AS(out.open_part("b", "report", false, offset), Error);
  int fd = ::open((root + "/b/scratch").c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  CHECK_THROWS_AS(out.commit_part("b", "report", fd), Error);
  ::close(fd);
  CHECK(test::read(root + "/b/report.json") == "{\"report\":1}");
  CHECK(out.write_sidecar("b", "sh010", "{}") == root + "/b/sh010.json");
  CHECK(test::read(root + "/b/sh010.json") == "{}");
}

TEST_CASE("a poster is staged beside its video and shown only with it") {
  std::string root = test::cwd() + "/out";
  test::mkdirs(root + "/b");
  OutputDir out(root);
  const std::string staged = root + "/b/.s1.jpg.part";
  CHECK(out.poster_part_path("b", "s1") == staged);

  SUBCASE("the staged poster becomes <shot>.jpg, in place of an earlier take's") {
    test::write(root + "/b/s1.jpg", "take 1");
    test::write(staged, "take 2");
    CHECK(out.commit_poster("b", "s1") == "");
    CHECK(test::read(root + "/b/s1.jpg") == "take 2");
    CHECK_FALSE(test::exists(staged));
  }
  SUBCASE("without a staged poster, an earlier take's is removed: it shows another video") {
    test::write(root + "/b/s1.jpg", "take 1");
    CHECK(out.commit_poster("b", "s1") == "");
    CHECK_FALSE(test::exists(root + "/b/s1.jpg"));
    CHECK(out.commit_poster("b", "s1") == "");  // nothing at all: nothing to do
  }
  SUBCASE("something other than a file staged is refused, and nothing is shown") {
    test::mkdirs(staged);
    test::write(root + "/b/s1.jpg", "take 1");
    CHECK(out.commit_poster("b", "s1").find("not a regular file") != std::string::npos);
    CHECK_FALSE(test::exists(root + "/b/s1.jpg"));
  }
  SUBCASE("a discarded part takes its staged poster with it") {
    test::write(root + "/b/.s1.mp4.part", "video");
    test::write(staged, "poster");
    out.discard_part("b", "s1");
    CHECK_FALSE(test::exists(staged));
    CHECK_FALSE(test::exists(root + "/b/.s1.mp4.part"));
  }
  SUBCASE("a download that starts from nothing removes a poster staged by another, a resume keeps it") {
    test::write(staged, "poster");
    long long offset = -1;
    int fd = out.open_part("b", "s1", false, offset);
    REQUIRE(fd >= 0);
    CHECK(::write(fd, "abc", 3) == 3);
    ::close(fd);
    CHECK(offset == 0);
    CHECK_FALSE(test::exists(staged));
    test::write(staged, "poster");
    fd = out.open_part("b", "s1", true, offset);
    REQUIRE(fd >= 0);
    ::close(fd);
    CHECK(offset == 3);
    CHECK(test::exists(staged));
  }
  SUBCASE("a withdrawn video takes its poster with it") {
    test::write(root + "/b/s1.mp4", "video");
    test::write(root + "/b/s1.json", R"({"request_id":"r1"})");
    test::write(root + "/b/s1.jpg", "poster");
    out.withdraw("b", "s1", "r1", false);
    CHECK_FALSE(test::exists(root + "/b/s1.jpg"));
    CHECK_FALSE(test::exists(root + "/b/s1.mp4"));
  }
}

TEST_CASE("what is not a regular file at a name the download writes is removed, or named when it must be left") {
  std::string root = test::cwd() + "/out";
  test::mkdirs(root + "/b");
  OutputDir out(root);
  CHECK(out.foreign_part("b", "s1") == "");
  // Its own temporary names: a symlink or a FIFO is removed, a folder cannot be.
  REQUIRE(::symlink("/etc/passwd", (root + "/b/.s1.json.commit").c_str()) == 0);
  REQUIRE(::mkfifo((root + "/b/.s1.jpg.part").c_str(), 0644) == 0);
  CHECK(out.foreign_part("b", "s1") == "");
  CHECK_FALSE(test::exists(root + "/b/.s1.json.commit"));
  CHECK_FALSE(test::exists(root + "/b/.s1.jpg.part"));
  test::mkdirs(root + "/b/.s1.json.commit");
  CHECK(out.foreign_part("b", "s1") == root + "/b/.s1.json.commit");
  std::filesystem::remove(root + "/b/.s1.json.commit");
  // The names its commit replaces: named, never removed (someone put it there).
  REQUIRE(::symlink("/etc/passwd", (root + "/b/s1.json").c_str()) == 0);
  CHECK(out.foreign_part("b", "s1") == root + "/b/s1.json");
  CHECK(std::filesystem::is_symlink(root + "/b/s1.json"));
  std::filesystem::remove(root + "/b/s1.json");
  test::mkdirs(root + "/b/s1.mp4");
  CHECK(out.foreign_part("b", "s1") == root + "/b/s1.mp4");
  std::filesystem::remove(root + "/b/s1.mp4");
  test::write(root + "/b/s1.mp4", "an earlier take");
  CHECK(out.foreign_part("b", "s1") == "");
}

TEST_CASE("a download from its first byte gets a .part of its own, never one another name is linked to") {
  // Outside attack (c2d4760): the .part was truncated in place, so a hard link to
  // it became a second name of the delivered video.
  std::string root = test::cwd() + "/out";
  test::mkdirs(root + "/b");
  OutputDir out(root);
  test::write(root + "/b/.s1.mp4.part", "old bytes");
  REQUIRE(::link((root + "/b/.s1.mp4.part").c_str(), (root + "/b/other-name").c_str()) == 0);
  long long offset = -1;
  int fd = out.open_part("b", "s1", false, offset);
  REQUIRE(fd >= 0);
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  CHECK(st.st_nlink == 1);
  CHECK(offset == 0);
  CHECK(::write(fd, "new", 3) == 3);
  ::close(fd);
  CHECK(test::read(root + "/b/other-name") == "old bytes");
  CHECK(test::read(root + "/b/.s1.mp4.part") == "new");
}
