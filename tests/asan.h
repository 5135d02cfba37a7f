/* asan.h: TEST_UNDER_ASAN is 1 in a build with AddressSanitizer (gcc or
 * clang), 0 otherwise: for the few tests whose subject ASan itself changes
 * (a fault it turns into its report, an allocation it refuses, memory its
 * quarantine keeps). */
#ifndef TESTS_ASAN_H
#define TESTS_ASAN_H

#if defined(__SANITIZE_ADDRESS__)
#define TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_UNDER_ASAN 1
#endif
#endif
#ifndef TEST_UNDER_ASAN
#define TEST_UNDER_ASAN 0
#endif

#endif
