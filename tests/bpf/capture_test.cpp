// Placeholder: replaced by the BPF_PROG_TEST_RUN tests.
#include <gtest/gtest.h>
