module reactorlab/00-fixture

go 1.26.0

require reactorlab/shared v0.0.0

require golang.org/x/sys v0.50.0 // indirect

replace reactorlab/shared => ../../../..
