/*
 * Unit tests for src/base/list.h: the order of a list, removing twice, and tc__list_replace,
 * which moves a list head (or a node) to another place, as the batcher does when its array of
 * entries, each the head of a list of waiters, grows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/list.h"

typedef struct item {
    int value;
    tc__link link;
} item;

/* The values of the list headed by head, in order, into out (at most max); returns the count
 * and checks that walking backwards gives the same nodes. */
static size_t values_of(const tc__link *head, int *out, size_t max)
{
    size_t n = 0;
    for (const tc__link *l = head->next; l != head; l = l->next) {
        assert_ptr_equal(l->next->prev, l);
        assert_true(n < max);
        out[n++] = tc__container_of(l, item, link)->value;
    }
    size_t back = 0;
    for (const tc__link *l = head->prev; l != head; l = l->prev)
        back++;
    assert_int_equal(back, n);
    return n;
}

static void test_fifo_and_remove_twice(void **state)
{
    (void)state;
    tc__link head;
    item it[3] = {{1, {0}}, {2, {0}}, {3, {0}}};
    int v[4];
    tc__list_init(&head);
    assert_true(tc__list_empty(&head));
    assert_null(tc__list_first(&head));
    assert_null(tc__list_last(&head));
    for (int i = 0; i < 3; i++)
        tc__list_push_back(&head, &it[i].link);
    assert_int_equal(values_of(&head, v, 4), 3);
    assert_int_equal(v[0], 1);
    assert_int_equal(v[2], 3);
    assert_ptr_equal(tc__list_first(&head), &it[0].link);
    assert_ptr_equal(tc__list_last(&head), &it[2].link);
    tc__list_remove(&it[1].link);
    tc__list_remove(&it[1].link); /* harmless: an unlinked node points at itself */
    assert_int_equal(values_of(&head, v, 4), 2);
    assert_int_equal(v[0], 1);
    assert_int_equal(v[1], 3);
}

static void test_replace_moves_a_head(void **state)
{
    (void)state;
    item it[3] = {{1, {0}}, {2, {0}}, {3, {0}}};
    int v[4];
    /* Two heads in an array that is then copied elsewhere, as a grown array is. */
    tc__link old_heads[2], new_heads[2];
    tc__list_init(&old_heads[0]);
    tc__list_init(&old_heads[1]);
    for (int i = 0; i < 3; i++)
        tc__list_push_back(&old_heads[0], &it[i].link);
    memcpy(new_heads, old_heads, sizeof(old_heads));
    tc__list_replace(&old_heads[0], &new_heads[0]);
    tc__list_replace(&old_heads[1], &new_heads[1]);
    memset(old_heads, 0xA5, sizeof(old_heads)); /* the old place is gone */

    assert_int_equal(values_of(&new_heads[0], v, 4), 3);
    assert_int_equal(v[0], 1);
    assert_int_equal(v[1], 2);
    assert_int_equal(v[2], 3);
    assert_true(tc__list_empty(&new_heads[1])); /* an empty head stays empty, at its new place */
    tc__list_remove(&it[0].link);
    tc__list_remove(&it[2].link);
    assert_int_equal(values_of(&new_heads[0], v, 4), 1);
    assert_int_equal(v[0], 2);
    tc__list_remove(&it[1].link);
    assert_true(tc__list_empty(&new_heads[0]));
}

static void test_replace_moves_a_node(void **state)
{
    (void)state;
    tc__link head;
    item it[3] = {{1, {0}}, {2, {0}}, {3, {0}}};
    item other = {9, {0}};
    int v[4];
    tc__list_init(&head);
    for (int i = 0; i < 3; i++)
        tc__list_push_back(&head, &it[i].link);
    tc__list_replace(&it[1].link, &other.link);
    assert_int_equal(values_of(&head, v, 4), 3);
    assert_int_equal(v[1], 9);
    assert_ptr_equal(it[1].link.next, &it[1].link); /* the replaced node is unlinked */
    tc__list_remove(&it[1].link);                   /* and removing it changes nothing */
    assert_int_equal(values_of(&head, v, 4), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_and_remove_twice),
        cmocka_unit_test(test_replace_moves_a_head),
        cmocka_unit_test(test_replace_moves_a_node),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
