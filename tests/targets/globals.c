/* globals: known values for instr peek, readable while the target waits.
 *
 *   global_counter  long    1234567890123
 *   small           int16   -42
 *   ratio           double  1.5
 *   table           int[4]  {10, 20, 30, 40}
 *   message         char[]  "hello, peek"
 *   blob            uint8[20] = 0, 1, ..., 19
 *   message_ptr     char *  -> message
 *   answer          const int 42 (in read-only data)
 * Prints "ready", waits for a line, then prints the values (instr poke may
 * have changed them) and exits:
 *   "counter=<global_counter> small=<small> ratio=<ratio> table=<t0>,<t1>,<t2>,<t3>
 *    message=<message> blob0=<blob[0]> ptr_ok=<message_ptr == message>"
 */
#include <stdint.h>
#include "target.h"

long global_counter = 1234567890123L;
short small = -42;
double ratio = 1.5;
int table[4] = {10, 20, 30, 40};
char message[] = "hello, peek";
uint8_t blob[20] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19};
char *message_ptr = message;
const int answer = 42; /* read-only data: poke refuses it */

int main(void)
{
    wait_go();
    KEEP(global_counter);
    KEEP(small);
    KEEP(ratio);
    KEEP(table);
    KEEP(blob);
    KEEP(message_ptr);
    KEEP(answer);
    printf("counter=%ld small=%d ratio=%g table=%d,%d,%d,%d message=%s blob0=%d ptr_ok=%d\n",
           global_counter, small, ratio, table[0], table[1], table[2], table[3], message,
           blob[0], message_ptr == message);
    return 0;
}
