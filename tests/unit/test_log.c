/* test_log.c - log lines: one call is one line, and a value from outside
 * stays inside its quoted field (lg_log_clean, lg_log_cleaned). */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lambdagate/log.h"

START_TEST(test_clean_replaces_quotes_backslashes_and_controls)
{
    char s[] = "a\"b\\c\nd\re\tf\x7fg\x01h";
    lg_log_clean(s);
    ck_assert_str_eq(s, "a'b'c'd'e'f'g'h");
    /* Anything else, UTF-8 included, is left as it is. */
    char t[] = "caf\xc3\xa9 = 'x' {y}";
    lg_log_clean(t);
    ck_assert_str_eq(t, "caf\xc3\xa9 = 'x' {y}");
}
END_TEST

START_TEST(test_cleaned_copies_truncates_and_takes_null)
{
    char out[8];
    ck_assert_ptr_eq(lg_log_cleaned(out, sizeof(out), "x\"y"), out);
    ck_assert_str_eq(out, "x'y");
    lg_log_cleaned(out, sizeof(out), "0123456789\"");
    ck_assert_str_eq(out, "0123456");
    lg_log_cleaned(out, sizeof(out), NULL);
    ck_assert_str_eq(out, "");
    ck_assert_str_eq(lg_log_cleaned(out, 0, "x"), "");
}
END_TEST

/* What lg_log writes to stderr during fn(arg), read back through a pipe. */
static void capture(void (*fn)(const char *), const char *arg, char *out, size_t size)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fds[1], STDERR_FILENO), 0);
    fn(arg);
    ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
    close(saved);
    close(fds[1]);
    size_t len = 0;
    ssize_t n;
    while (len < size - 1 && (n = read(fds[0], out + len, size - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(fds[0]);
}

static void log_peer_text(const char *text)
{
    char clean[64];
    lg_log(LG_LOG_WARN, "fetch failed url=%s reason=\"%s\" retry_in_ms=%d", "http://k",
           lg_log_cleaned(clean, sizeof(clean), text), 100);
}

START_TEST(test_hostile_value_stays_in_its_field)
{
    char line[512];
    capture(log_peer_text, "bad\" user=\"admin\nINFO forged=\"1", line, sizeof(line));
    ck_assert_str_eq(line, "WARN fetch failed url=http://k reason=\"bad' user='admin'INFO "
                           "forged='1\" retry_in_ms=100\n");
    /* Exactly the three fields written, and one line. */
    ck_assert_ptr_null(strstr(line, "user=\""));
    ck_assert_ptr_eq(strchr(line, '\n'), line + strlen(line) - 1);
}
END_TEST

static void log_raw(const char *text)
{
    lg_log_req(LG_LOG_ERROR, "rid-1", "raw value=%s", text);
}

START_TEST(test_one_call_is_one_line)
{
    char line[512];
    /* Even a value that was not cleaned cannot start a line of its own. */
    capture(log_raw, "a\nWARN b\r\x1b[2J", line, sizeof(line));
    ck_assert_str_eq(line, "ERROR raw value=a?WARN b??[2J request_id=rid-1\n");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_clean_replaces_quotes_backslashes_and_controls);
    tcase_add_test(tc, test_cleaned_copies_truncates_and_takes_null);
    tcase_add_test(tc, test_hostile_value_stays_in_its_field);
    tcase_add_test(tc, test_one_call_is_one_line);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
