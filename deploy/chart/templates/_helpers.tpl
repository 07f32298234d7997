{{- define "rudder.labels" -}}
app.kubernetes.io/name: rudder
{{- end }}
