/*
 * tests/install/sender.c: the smallest service that sends an event, built
 * the way a user builds against an installed birdfeeder:
 *
 *   cc sender.c $(pkg-config --cflags --libs birdfeeder) -o sender
 *
 * so it includes <birdfeeder/...> and nothing from the source tree.
 * usage: sender HOST:PORT ID   sends one image_events event with that id,
 * prints the client's counters and exits 0 when the event was sent.
 */
#include <birdfeeder/bf_client.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST:PORT ID\n", argv[0]);
        return 2;
    }
    int err = 0;
    bf_client *c = bf_client_open(argv[1], &err);
    if (!c) {
        fprintf(stderr, "sender: %s: %s\n", argv[1], strerror(-err));
        return 1;
    }
    bf_event ev;
    bf_event_init(&ev, BF_DATASET_image_events);
    BF_SET_STR(&ev, model, "flux", 4);
    BF_SET_STR(&ev, id, argv[2], strlen(argv[2]));
    BF_SET_U64(&ev, width, 1024);
    int rc = bf_client_send(c, &ev);
    struct bf_client_stats st;
    bf_client_stats(c, &st);
    printf("sent=%llu dropped=%llu oversize=%llu failed=%llu\n",
           (unsigned long long)st.sent, (unsigned long long)st.dropped,
           (unsigned long long)st.oversize, (unsigned long long)st.failed);
    bf_client_close(c);
    return rc == 0 && st.sent == 1 ? 0 : 1;
}
