// SHA-256 over files (runtime/sha256.h): known answers through sha256_file, reads spanning
// several chunks, and inputs that are not regular files refused at once instead of hanging.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <future>
#include <string>

#include "runtime/error.h"
#include "runtime/sha256.h"
#include "tests/util.h"

using namespace lt;
using namespace lt::test;

namespace {

std::string user_error_of(const std::string& path) {
  try {
    sha256_file(path);
  } catch (const UserError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a UserError for " << path;
  return "";
}

}  // namespace

TEST(Sha256File, KnownAnswers) {
  TempDir dir;
  write_file(dir / "empty", "");
  write_file(dir / "abc", "abc");
  write_file(dir / "nist448", "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq");
  write_file(dir / "million", std::string(1000000, 'a'));  // FIPS 180-2's long-message vector
  EXPECT_EQ(sha256_file(dir / "empty"), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_file(dir / "abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_file(dir / "nist448"), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_file(dir / "million"), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256File, ManyChunksMatchOneBuffer) {
  // Past the reader's 4 MiB chunk, ending off a block boundary.
  std::string data((9u << 20) + 77, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = (char)(i * 2654435761u >> 11);
  TempDir dir;
  write_file(dir / "big", data);
  EXPECT_EQ(sha256_file(dir / "big"), sha256_hex(data));
}

TEST(Sha256File, MissingFileNamesIt) {
  TempDir dir;
  EXPECT_NE(user_error_of(dir / "missing").find(dir / "missing"), std::string::npos);
}

TEST(Sha256File, DirectoryIsRefused) {
  TempDir dir;
  EXPECT_NE(user_error_of(dir.path.string()).find("directory"), std::string::npos);
}

// A FIFO with no writer used to block open() forever (a checkpoint file replaced by a FIFO hung
// every resume); now it is refused at once.
TEST(Sha256File, FifoIsRefusedWithoutBlocking) {
  TempDir dir;
  const std::string fifo = dir / "model.safetensors";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto result = std::async(std::launch::async, [&] { return user_error_of(fifo); });
  if (result.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    // Release the blocked reader so the test can end, then fail.
    const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
    if (fd >= 0) ::close(fd);
    result.wait();
    FAIL() << "sha256_file blocked on a FIFO";
  }
  EXPECT_NE(result.get().find("FIFO"), std::string::npos);
}
