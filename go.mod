module github.com/metanas-go/metanas

go 1.22

require (
	github.com/nlpodyssey/gopickle v0.2.0
	github.com/spf13/pflag v1.1.0
	github.com/wangkuiyi/gotorch v0.0.0-20201028015551-9afed2f3ad7b
	gopkg.in/yaml.v3 v3.0.1
)
