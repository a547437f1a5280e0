/*
 * linphone_publish: a liblinphone client that registers and PUBLISHes its presence as "away".
 *
 * linphonec has no command to set its own presence (tests/e2e: see the presence tests), so the
 * end-to-end test compiles this at run time against Debian's liblinphone-dev:
 *
 *   gcc -I. -o linphone_publish linphone_publish.c \
 *       $(pkg-config --cflags --libs linphone) -llinphone
 *
 * (Debian's linphone.pc names no -llinphone in Libs, hence the explicit one.)
 *
 * Usage:
 *   linphone_publish --dir DIR --local-port PORT --server-port PORT --domain DOMAIN \
 *                    --user USER --password PASSWORD [--timeout SECONDS] [--verbose]
 *
 * Everything on 127.0.0.1 over UDP; DIR holds the linphonerc, the database and the log. The
 * program prints one line per step on stdout, flushed at once (liblinphone's log goes to
 * DIR/linphone.log, progress notes to stderr):
 *   REGISTERED       the REGISTER was answered 200
 *   PUBLISHED        a PUBLISH carrying the "away" presence model was answered 200
 *   UNPUBLISHED      after stdin closed (or the timeout): the PUBLISH with Expires 0 is out
 *                    (liblinphone reports "cleared" on sending it, not on its answer)
 *   UNREGISTERED     then the un-REGISTER was answered
 *   ERROR <text>     something failed; the exit code is then 1
 * It keeps running after PUBLISHED until stdin reaches end of file or --timeout seconds
 * (default 60) have passed since the start, then un-PUBLISHes, un-REGISTERs and exits 0.
 * The core setup, registration and un-REGISTER are linphone_common.h's (shared with
 * linphone_chat.c).
 */

#include <errno.h>
#include <poll.h>

#include "linphone_common.h"

static int published = 0;         /* the presence PUBLISH was answered 200 */
static int unpublished = 0;       /* the un-PUBLISH (Expires 0) was sent */
static int publish_failed = 0;

/* The account's own presence PUBLISH is an internal LinphoneEvent: liblinphone 5.1 reports its
 * state to no callback (publish_state_changed is "only from LinphoneEvent api"), only in its log:
 *   "LinphoneEvent [0x...] moving from [LinphonePublishProgress] to publish state LinphonePublishOk"
 * The account publishes nothing else here, so that message is the 200 to our PUBLISH. */
static void on_log(LinphoneLoggingService *service, const char *domain, LinphoneLogLevel level,
                   const char *message) {
    (void)service;
    (void)domain;
    (void)level;
    if (message == NULL || strstr(message, "to publish state ") == NULL)
        return;
    if (strstr(message, "to publish state LinphonePublishOk") != NULL)
        published = 1;
    else if (strstr(message, "to publish state LinphonePublishError") != NULL)
        publish_failed = 1;
    else if (strstr(message, "to publish state LinphonePublishCleared") != NULL)
        unpublished = 1;
}

/* the un-PUBLISH of a publication is still to go out */
static int unpublish_pending(void) {
    return published && !unpublished;
}

/* 1 once stdin has reached end of file (or failed); never blocks */
static int stdin_closed(void) {
    struct pollfd p = {.fd = 0, .events = POLLIN};
    char buf[256];
    while (poll(&p, 1, 0) > 0) {
        if (p.revents & (POLLIN | POLLHUP)) {
            ssize_t n = read(0, buf, sizeof buf);
            if (n == 0)
                return 1;
            if (n < 0)
                return errno != EINTR && errno != EAGAIN;
            continue; /* anything written to stdin is ignored */
        }
        return (p.revents & (POLLERR | POLLNVAL)) != 0;
    }
    return 0;
}

int main(int argc, char **argv) {
    struct lc_args a;
    lc_parse_args(argc, argv, "linphone_publish", NULL, NULL, NULL, &a);
    double deadline = lc_now() + a.timeout;

    LinphoneCore *core = lc_core_new(&a, on_log);
    if (core == NULL || lc_core_start(core) != 0)
        return 1;

    /* presence "away" before the account registers: every PUBLISH it sends carries it (set
     * after registration, it would race the first PUBLISH of the default "online" model) */
    LinphonePresenceModel *model =
        linphone_presence_model_new_with_activity(LinphonePresenceActivityAway, NULL);
    linphone_core_set_presence_model(core, model);
    linphone_presence_model_unref(model);

    LinphoneAccount *account = lc_add_account(core, &a, 1);
    if (account == NULL)
        return 1;

    /* 1. register */
    int status = lc_wait_registered(core, deadline, a.timeout);

    /* 2. the account PUBLISHes "away" once registered: wait for the 200 */
    if (status == 0) {
        while (!published && !publish_failed && lc_now() < deadline)
            lc_step(core);
        if (published) {
            lc_say("PUBLISHED");
        } else {
            lc_say("ERROR %s", publish_failed ? "PUBLISH failed" : "no answer to PUBLISH in time");
            status = 1;
        }
    }

    /* 3. stay until stdin closes or the time is up */
    while (status == 0 && !stdin_closed() && lc_now() < deadline)
        lc_step(core);

    /* 4. remove the publication (PUBLISH with Expires 0) and un-REGISTER */
    if (lc_unregister(core, account, unpublish_pending)) {
        if (published && unpublished)
            lc_say("UNPUBLISHED");
        lc_say_unregistered();
        lc_iterate_for(core, 0.2);
    }
    lc_finish(core, account);
    return status;
}
