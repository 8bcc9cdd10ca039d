package config_test

import (
	"fmt"

	"github.com/metanas-go/metanas/metanas/config"
)

// A command resolves its configuration in layers and exits with status 2 on
// any configuration error, printing one problem per line.
func Example() {
	cfg := config.Default()
	for _, kv := range []string{"data.ways=5", "model.reductions=[1]", "task.w_lr=-0.01"} {
		if err := cfg.Set(kv); err != nil {
			fmt.Println(err)
			return
		}
	}
	if err := cfg.Validate(); err != nil {
		fmt.Println(err)
	}
	if err := cfg.Set("task.wlr=0.01"); err != nil {
		fmt.Println(err)
	}
	// Output:
	// --set task.w_lr=-0.01: task.w_lr: must be greater than 0, got -0.01; set the task learning rate of the weights, for example 0.005
	// --set task.wlr=0.01: task.wlr: unknown key "wlr" in section "task" (did you mean "w_lr"?); valid keys: steps, test_steps, arch_steps, test_arch_steps, batch_size, test_batch_size, w_lr, a_lr, w_betas, a_betas, w_weight_decay, a_weight_decay, grad_clip, optim_state
}
