package queue

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

func TestZZPlans(t *testing.T) {
	if os.Getenv("ZZ_PLAN") == "" {
		t.Skip()
	}
	for _, total := range []int{1500, 50000} {
		env := newEnv(t, Options{})
		ctx := context.Background()
		for i := 0; i < total; i += 500 {
			env.q.Enqueue(ctx, benchSteps("q", 500))
		}
		env.pool.Exec(ctx, "ANALYZE tasker_steps")
		cl, _ := env.q.Claim(ctx, []string{"q"}, "w", 1000, time.Minute)
		claims := make([]Claim, len(cl))
		for i, c := range cl {
			claims[i] = c.Claim()
		}
		ids, toks := claimArrays(claims)
		n := len(ids)
		outs, rs, es, js := make([]string, n), make([]string, n), make([]string, n), make([]float64, n)
		for i := range outs {
			outs[i], js[i] = "success", 1
		}
		for k := 0; k < 7; k++ {
			sql, args := extendSQL, []any{ids, toks, int64(30e6)}
			if os.Getenv("ZZ_PLAN") == "complete" {
				sql, args = completeSQL, []any{ids, toks, outs, rs, es, js, env.q.backoffUS}
			}
			rows, err := env.pool.Query(ctx, "EXPLAIN "+sql, args...)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var l string
				rows.Scan(&l)
				if k == 0 || k == 6 {
					fmt.Println(total, k, l)
				}
			}
		}
	}
}
