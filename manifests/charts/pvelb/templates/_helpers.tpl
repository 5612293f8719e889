{{- define "pvelb.labels" -}}
app.kubernetes.io/part-of: pvelb
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "pvelb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "pvelb.cloudConfigSecret" -}}
{{ .Values.proxmox.existingSecret | default "pvelb-cloud-config" }}
{{- end -}}

{{- define "pvelb.membershipSecret" -}}
{{ .Values.announcer.membershipSecret | default "pvelb-announcer-membership" }}
{{- end -}}

{{/* The cloud config file (provider/config); token secrets and CAs are separate keys. */}}
{{- define "pvelb.cloudConfig" -}}
{{- $clusters := list -}}
{{- range $i, $c := .Values.proxmox.clusters -}}
{{- $region := required (printf "proxmox.clusters[%d].region is required" $i) $c.region -}}
{{- $cl := dict "region" $region "tokenID" (required (printf "proxmox.clusters[%d].tokenID is required" $i) $c.tokenID) "tokenSecretFile" (printf "%s.token" $region) -}}
{{- if $c.urls }}{{ $_ := set $cl "urls" $c.urls }}{{ else }}{{ $_ := set $cl "url" (required (printf "proxmox.clusters[%d].url (or urls) is required" $i) $c.url) }}{{ end -}}
{{- if $c.caCert }}{{ $_ := set $cl "caFile" (printf "%s-ca.pem" $region) }}{{ end -}}
{{- if $c.insecureSkipVerify }}{{ $_ := set $cl "insecureSkipVerify" true }}{{ end -}}
{{- if $c.timeout }}{{ $_ := set $cl "timeout" $c.timeout }}{{ end -}}
{{- $clusters = append $clusters $cl -}}
{{- end -}}
{{- $cfg := dict "clusters" $clusters "instances" .Values.proxmox.instances "firewall" .Values.proxmox.firewall "loadBalancer" (dict "serveClasslessServices" .Values.loadBalancer.serveClasslessServices) -}}
{{ toYaml $cfg }}
{{- end -}}
