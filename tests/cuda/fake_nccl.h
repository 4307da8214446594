// The test hook of tests/cuda/fake_nccl.cpp, the NCCL stand-in of the emulated build.
#pragma once
#include <nccl.h>

// The next collective (on any communicator of this process) is taken by a failure: it does
// nothing, its event never completes, and ncclCommGetAsyncError reports `async_error` for its
// communicator until ncclCommAbort, which ends the stuck collective. Call it on every rank.
void fake_nccl_fail_next(ncclResult_t async_error);

// The next collective blocks inside the NCCL call for `seconds` before it runs (as a call
// setting up connections to a slow or dead peer does), then completes normally.
void fake_nccl_delay_next(double seconds);
